import Foundation
import Glibc
import Testing
@testable import PosternCore
@testable import PosternRuntime

/// The control socket served below the socket: requests in pieces, oversized
/// requests, a long listing read slowly, too many clients.
final class ControlHarness: LoopHarness {
    static let listenFD: Int32 = 7
    let kernel = ScriptedKernel()
    let receiver = ReceiverHarness()
    let server: ControlServer
    var now: Int64 = 1_000_000_000_000

    init() {
        var upstream = UpstreamConfig()
        upstream.host = "127.0.0.1"
        upstream.tls = .none
        let delivery = Delivery(upstream: upstream, heloName: "b", policy: RetryPolicy(initialSeconds: 60, maxSeconds: 600),
                                expiry: ExpiryPolicy(maxAge: 86400), spool: receiver.spool, log: Log(quiet: true), kernel: kernel)
        server = ControlServer(path: "/run/test/control", spool: receiver.spool, delivery: delivery, log: Log(quiet: true),
                               facts: DaemonFacts(startedMonotonic: 0, activeConnections: 0, maxConnections: 4), kernel: kernel)
        server.listenFD = Self.listenFD
    }

    func connect() -> ScriptedKernel.Socket {
        let (_, s) = kernel.connect(to: Self.listenFD, from: IPAddress.loopbackV4)
        return s
    }

    func step() {
        let entries = server.pollSet()
        var fds = entries.map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        _ = kernel.poll(&fds, timeoutMilliseconds: 0)
        for (k, p) in fds.enumerated() where p.revents != 0 {
            server.ready(index: entries[k].index, revents: p.revents, now: now)
        }
        server.timers(now: now)
    }

}

@Suite("Control server below the socket")
struct ControlServerTests {
    @Test("A request split over several reads is answered once")
    func splitRequest() {
        let h = ControlHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes("sta")), .bytes(bytes("tu")), .bytes(bytes("s\r\n"))]
        h.run { s.closed }
        #expect(s.sentText.hasPrefix("OK\npostern "))
        #expect(s.sentText.components(separatedBy: "OK\n").count == 2)
    }

    @Test("A request longer than the limit is refused, not buffered")
    func tooLong() {
        let h = ControlHarness()
        let s = h.connect()
        s.incoming = [.bytes([UInt8](repeating: 65, count: 5000))]
        h.run { s.closed }
        #expect(s.sentText == "ERROR request too long\n")
    }

    @Test("A second request on the same connection is never run")
    func oneRequestPerConnection() {
        let h = ControlHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes("flush\nflush\nflush\n"))]
        h.run { s.closed }
        #expect(s.sentText.components(separatedBy: "OK\n").count == 2)
    }

    @Test("A listing of 3,000 messages read 50 bytes at a time is complete and in order")
    func slowReaderOfALongListing() {
        let h = ControlHarness()
        let r = h.receiver
        let sender = r.connect()
        var cmds = "EHLO c\r\n"
        for i in 0..<3000 { cmds += "MAIL FROM:<a@example.org>\r\nRCPT TO:<r\(i)@example.com>\r\nDATA\r\nSubject: \(i)\r\n\r\nx\r\n.\r\n" }
        sender.incoming = [.bytes(bytes(cmds))]
        r.run(limit: 100_000) { r.spool.queue.count == 3000 }
        #expect(r.spool.queue.count == 3000)
        let s = h.connect()
        s.incoming = [.bytes(bytes("queue json\n"))]
        h.run(limit: 200_000) {
            if s.window == 0 || s.window == nil { s.window = 50 }
            return s.closed
        }
        let text = s.sentText
        #expect(text.hasPrefix("OK\n{\"messages\":["))
        #expect(text.components(separatedBy: "\"id\":").count == 3001)
        #expect(text.contains("r2999@example.com"))
    }

    @Test("More clients than connections: the extra one is told it is busy")
    func busy() {
        let h = ControlHarness()
        let idle = (0..<4).map { _ in h.connect() }
        h.step()
        let extra = h.connect()
        h.step()
        #expect(extra.sentText.hasPrefix("ERROR busy"))
        #expect(extra.closed)
        #expect(idle.allSatisfy { !$0.closed })
        // Silent clients are dropped after the request timeout.
        h.now += 11_000_000_000
        h.step()
        #expect(idle.allSatisfy { $0.closed })
    }
}
