import ArgumentParser
import Foundation
import SyncKit

/// `syncctl gui-url`: the dashboard's address with the API key in the URL's fragment.
///
/// Reads what the daemon wrote in the state directory when it started serving (the address it
/// bound, so port 0 is resolved) and the key (made on first start). The key rides in the
/// fragment (`#key=`), which a browser never sends to a server: the page reads it, keeps it for
/// the tab, and clears the address bar.
struct GUIURL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gui-url",
        abstract: "Print the dashboard's address with the API key, to open in a browser.",
        discussion: "With --key-only, print the API key alone (for scripts: curl -H \"X-API-Key: $(syncctl gui-url --dir D --key-only)\" http://127.0.0.1:8384/rest/status).")
    @OptionGroup var folder: FolderOptions
    @Flag(help: "Print only the API key.") var keyOnly = false

    func run() throws {
        let state = folder.stateDir ?? folder.absoluteDir + "/" + PathSafety.stateDirectory
        guard let key = GUIKeys.read(state) else {
            throw ValidationError("No API key in \(state) yet: start the node once (syncctl run) and it makes one, or pass --gui-api-key to run.")
        }
        if keyOnly {
            print(key)
            return
        }
        let address = (try? String(contentsOfFile: GUIKeys.addressPath(state), encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "http://127.0.0.1:8384/"
        print("\(address)#key=\(key)")
    }
}
