import CFuzzDriver
import Glibc

/// The `main` every fuzz target runs. SwiftPM binds an executable's `main` to its module's entry
/// point, which hides libFuzzer's own `main`, so each target's `@main` calls this: it hands the
/// command line and the target's test function to libFuzzer's driver (`LLVMFuzzerRunDriver`).
/// With `--write-seeds DIR` it writes the target's seed corpus into DIR instead
/// (Fuzz/Corpus, `scripts/fuzz.sh --write-seeds`).
public func runFuzzer(
    _ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt,
    seeds: () -> [(String, [UInt8])]
) -> Never {
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
    exit(LLVMFuzzerRunDriver(&argc, &argv, test))
}

/// Splits `count` bytes into consecutive pieces of 1 to 61 bytes, with sizes from a fixed
/// sequence seeded by `count` (so a run is reproducible): a stream decoder fed the pieces one
/// by one must give what it gives for the whole input.
public func chunkRanges(count: Int) -> [Range<Int>] {
    var ranges: [Range<Int>] = []
    var offset = 0
    var seed = UInt32(truncatingIfNeeded: count) &* 2_654_435_761
    while offset < count {
        seed = seed &* 1_103_515_245 &+ 12345
        let n = min(Int(seed >> 16) % 61 + 1, count - offset)
        ranges.append(offset..<(offset + n))
        offset += n
    }
    return ranges
}
