@testable import PosternCore
@testable import PosternRuntime
import CLibc

// The record the name-lookup child writes to its pipe (cl_process.h), as
// `AsyncResolver.decode` checks it: any bytes give nil, a failure sentence, or
// 1 to 16 endpoints of family 4 or 6 with the port asked for. The first two
// bytes choose the port; a third byte, when 1, prepends a valid magic so the
// fuzzer reaches past it.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let port = input.int(0...65535)
    var bytes: [UInt8] = []
    if input.byte() == 1 {
        withUnsafeBytes(of: Int32(CL_RESOLVE_MAGIC).littleEndian) { bytes += $0 }
    }
    bytes += input.rest()
    switch bytes.withUnsafeBytes({ AsyncResolver.decode($0, port: port) }) {
    case nil:
        break
    case .failure(let text)?:
        require(!text.isEmpty && text.utf8.count <= 1024, "a failure text of \(text.utf8.count) bytes")
    case .success(let endpoints)?:
        require(endpoints.count >= 1 && endpoints.count <= Int(CL_RESOLVE_MAX), "\(endpoints.count) endpoints")
        for e in endpoints {
            require(e.family == 4 || e.family == 6, "family \(e.family)")
            require(Int(e.port) == port, "port \(e.port) instead of \(port)")
        }
    }
}
