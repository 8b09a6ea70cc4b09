// libFuzzer target `dns`: the mDNS packet decoder, `DNSCodec.decode` (anyone on the LAN can send
// a packet). Bad bytes must end in `DNSError`; a packet that decodes must decode to the same
// message after `DNSCodec.encode` (when the encoding fits in an mDNS packet: a packet can point
// its names into bytes that encode does not compress against, so its encoding may be longer).
import CFuzzDriver
import Glibc
import DiscoveryMDNSLite

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDNS(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let packet = Array(UnsafeRawBufferPointer(start: start, count: count))
    let message: DNSMessage
    do {
        message = try DNSCodec.decode(packet)
    } catch is DNSError {
        return 0
    } catch {
        preconditionFailure("DNSCodec.decode threw something other than DNSError: \(error)")
    }
    let encoded = DNSCodec.encode(message)
    guard encoded.count <= DNSMessage.maximumPacketSize else { return 0 }
    do {
        let again = try DNSCodec.decode(encoded)
        precondition(again == message, "a DNS message changed in a round trip")
    } catch {
        preconditionFailure("a decoded DNS message does not decode after encoding: \(error)")
    }
    return 0
}

/// The entry point (see CFuzzDriver.h): libFuzzer's driver with this file's test function.
/// `--write-seeds DIR` writes the seed corpus instead (Fuzz/Corpus, scripts/fuzz.sh).
@main
enum Main {
    static func main() {
        let arguments = CommandLine.arguments
        if arguments.count == 3 && arguments[1] == "--write-seeds" {
            for (name, bytes) in seeds() {
                let file = arguments[2] + "/" + name
                guard let f = fopen(file, "wb"), fwrite(bytes, 1, bytes.count, f) == bytes.count, fclose(f) == 0 else {
                    fatalError("cannot write \(file)")
                }
            }
            exit(0)
        }
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzDNS))
    }
}

// MARK: seeds

/// Packets captured from avahi-daemon 0.8 (the distinct ones of
/// Tests/DiscoveryMDNSLiteTests/AvahiCapture.swift: probes, announcements, a query, goodbyes),
/// and what `DNSCodec.encode` makes of a query and of a full DNS-SD answer.
func seeds() -> [(String, [UInt8])] {
    let avahi = [
        "000000000003000000040000013401310161013901610165016501660166016601360163013101650134016101300130013001300130013001300130013001300130013001300138016501660369703604617270610000ff000102766d056c6f63616c0000ff00010132013002373802313007696e2d61646472c05000ff0001c05a000100010000007800040a4e0002c068000c0001000000780002c05ac05a001c0001000000780010fe80000000000000a4e1c6fffeea9a14c00c000c0001000000780002c05a",
        "0000840000000004000000000134013101610139016101650165016601660166013601630131016501340161013001300130013001300130013001300130013001300130013001380165016603697036046172706100000c800100000078000a02766d056c6f63616c00c060000180010000007800040a4e00020132013002373802313007696e2d61646472c050000c8001000000780002c060c060001c8001000000780010fe80000000000000a4e1c6fffeea9a14",
        "0000000000010000000200000d61766168692066697874757265085f73796e636b6974045f746370056c6f63616c0000ff0001c00c0021000100000078000b0000000055f002766dc028c00c0010000100001194005609747874766572733d313769643d474541514141414141414141414141414141414141414141414141414141414141414141414141414141414141414141414141410b636c75737465723d6c61620770726f746f3d31",
        "0000840000000004000000000d61766168692066697874757265085f73796e636b6974045f746370056c6f63616c000010800100001194005609747874766572733d313769643d474541514141414141414141414141414141414141414141414141414141414141414141414141414141414141414141414141410b636c75737465723d6c61620770726f746f3d31c01a000c0001000011940002c00cc00c0021800100000078000b0000000055f002766dc028095f7365727669636573075f646e732d7364045f756470c028000c0001000011940002c01a",
        "0000840000000006000000000d61766168692066697874757265085f73796e636b6974045f746370056c6f63616c000010800100001194005609747874766572733d313769643d474541514141414141414141414141414141414141414141414141414141414141414141414141414141414141414141414141410b636c75737465723d6c61620770726f746f3d31c01a000c0001000011940002c00cc00c0021800100000078000b0000000055f002766dc028c0af001c8001000000780010fe80000000000000a4e1c6fffeea9a14c0af000180010000007800040a4e0002095f7365727669636573075f646e732d7364045f756470c028000c0001000011940002c01a",
        "000000000001000100000000085f73796e636b6974045f746370056c6f63616c00000c0001c00c000c00010000119400100d61766168692066697874757265c00c",
        "000084000000000600000000095f7365727669636573075f646e732d7364045f756470056c6f63616c00000c0001000000000010085f73796e636b6974045f746370c023c034000c00010000000000100d61766168692066697874757265c034c0500021800100000000000b0000000055f002766dc023c072001c8001000000780010fe80000000000000a4e1c6fffeea9a14c072000180010000007800040a4e0002c0500010800100000000005609747874766572733d313769643d474541514141414141414141414141414141414141414141414141414141414141414141414141414141414141414141414141410b636c75737465723d6c61620770726f746f3d31",
        "00008400000000040000000002766d056c6f63616c00001c8001000000000010fe80000000000000a4e1c6fffeea9a140134013101610139016101650165016601660166013601630131016501340161013001300130013001300130013001300130013001300130013001380165016603697036046172706100000c8001000000000002c00cc00c000180010000000000040a4e00020132013002373802313007696e2d61646472c074000c8001000000000002c00c",
    ]
    var out = [(String, [UInt8])]()
    for (i, hex) in avahi.enumerated() {
        let digits = Array(hex.utf8)
        let bytes = stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
        out.append(("avahi-\(i)", bytes))
    }
    let service: DNSName = "_synckit._tcp.local"
    let instance = DNSName(instance: "node one", service: service)
    let host: DNSName = "node1.local"
    out.append(("encoded-query", DNSCodec.encode(DNSMessage(isResponse: false, questions: [DNSQuestion(name: service, type: .ptr, unicastResponse: true)]))))
    out.append(("encoded-answer", DNSCodec.encode(DNSMessage(isResponse: true, isAuthoritative: true, answers: [
        DNSRecord(name: service, ttl: 4500, data: .ptr(instance)),
        DNSRecord(name: instance, ttl: 120, cacheFlush: true, data: .srv(priority: 0, weight: 0, port: 22000, target: host)),
        DNSRecord(name: instance, ttl: 4500, cacheFlush: true, data: .txt([Array("txtvers=1".utf8), Array("proto=1".utf8)])),
    ], additionals: [
        DNSRecord(name: host, ttl: 120, cacheFlush: true, data: .a([10, 0, 0, 1])),
        DNSRecord(name: host, ttl: 120, cacheFlush: true, data: .aaaa([0xFE, 0x80] + [UInt8](repeating: 0, count: 13) + [1])),
        DNSRecord(name: instance, ttl: 120, data: .other(.nsec, [0xC0, 0x0C, 0, 5, 0, 0, 0x80, 0, 0x40])),
    ]))))
    return out
}
