// The part of libsystemd SyncKit uses: sending structured entries to the journal.
#include <systemd/sd-journal.h>
