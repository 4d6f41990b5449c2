import Testing
@testable import PosternCore

@Suite("Control socket requests")
struct ControlRequestTests {
    func parse(_ s: String) -> ControlRequest.Parse { ControlRequest.parse(Array(s.utf8)) }

    @Test("Each request, ended by LF or CRLF")
    func known() {
        #expect(parse("queue\n") == .request(.queue(json: false)))
        #expect(parse("queue json\r\n") == .request(.queue(json: true)))
        #expect(parse("flush\n") == .request(.flush))
        #expect(parse("status\r\n") == .request(.status))
    }

    @Test("The client side sends what the daemon parses")
    func roundTrip() {
        for r in [ControlRequest.queue(json: false), .queue(json: true), .flush, .status] {
            #expect(parse(r.line) == .request(r))
        }
    }

    @Test("Without LF: more is needed, until the line cannot fit")
    func partial() {
        #expect(parse("") == .needMore)
        #expect(parse("sta") == .needMore)
        #expect(parse(String(repeating: "x", count: ControlRequest.maxLength)) == .invalid("request too long"))
        #expect(parse(String(repeating: "x", count: ControlRequest.maxLength) + "\n") == .invalid("request too long"))
    }

    @Test("Unknown requests are named, with control bytes made visible")
    func unknown() {
        guard case .invalid(let why) = parse("rm -rf\u{1}\n") else { Issue.record("not refused"); return }
        #expect(why.contains("'rm -rf?'"))
        #expect(parse("QUEUE\n") != .request(.queue(json: false)))
        #expect(parse("\n") != .needMore)
    }
}
