// libFuzzer's entry point (Tests/fuzz/README.md). Linked with
// `-sanitize=fuzzer,address`, which brings libFuzzer's own `main`; each target
// file defines `fuzzOne`.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    fuzzOne(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}
