import JournaldLogging
import Logging
import Testing

@Suite struct JournalFieldNameTests {
    @Test(arguments: [
        ("peer.id", "SYNCKIT_PEER_ID"), ("sync.path", "SYNCKIT_SYNC_PATH"), ("node", "SYNCKIT_NODE"),
        ("_private", "SYNCKIT_PRIVATE"), ("a..b", "SYNCKIT_A_B"), ("é", "SYNCKIT_FIELD"), ("bytes.network", "SYNCKIT_BYTES_NETWORK"),
    ])
    func mapsKeysToValidJournalFields(_ key: String, _ field: String) {
        #expect(JournalFieldName.make(key) == field)
    }

    @Test func fieldNamesAreAlwaysValid() {
        for key in ["x", "-", "1abc", String(repeating: "k", count: 200), "Mixed.Case-Key_9"] {
            let name = JournalFieldName.make(key)
            #expect(name.count <= 64)
            #expect(name.first?.isLetter == true)
            #expect(name.allSatisfy { ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" })
        }
    }

    @Test func prioritiesFollowSyslog() {
        #expect(JournaldLogHandler.priority(.critical) == 2)
        #expect(JournaldLogHandler.priority(.error) == 3)
        #expect(JournaldLogHandler.priority(.warning) == 4)
        #expect(JournaldLogHandler.priority(.notice) == 5)
        #expect(JournaldLogHandler.priority(.info) == 6)
        #expect(JournaldLogHandler.priority(.debug) == 7)
    }
}
