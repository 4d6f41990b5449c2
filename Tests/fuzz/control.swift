@testable import PosternCore

// The control-socket request parser (ControlRequest.parse) over arbitrary bytes:
// it never traps, never asks for more beyond its limit, and every request it
// accepts is one whose own line parses back to it.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    let result = ControlRequest.parse(data)
    switch result {
    case .needMore:
        require(!data.contains(ASCII.lf), "needMore although an LF arrived")
        require(data.count < ControlRequest.maxLength, "needMore past maxLength")
    case .request(let r):
        require(ControlRequest.parse(Array(r.line.utf8)) == .request(r), "the request's own line does not parse back")
    case .invalid(let why):
        require(!why.isEmpty, "an empty reason")
        require(!why.utf8.contains(ASCII.lf) && !why.utf8.contains(ASCII.cr), "a line ending in the ERROR reason")
    }
}
