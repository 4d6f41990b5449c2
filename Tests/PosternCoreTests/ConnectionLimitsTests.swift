import Testing
@testable import PosternCore

private func ip(_ text: String) -> IPAddress { IPAddress(text)! }

@Suite("Connections per client address (issue 12 item 5; Postfix anvil count limit)")
struct ConnectionsPerClientTests {
    @Test("The default cap is half of max_connections, at least one (Postfix: 50 of 100)",
          arguments: [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8), (17, 8), (1024, 512)])
    func defaultCap(total: Int, cap: Int) {
        #expect(ConnectionSlots.defaultPerClient(total: total) == cap)
        #expect(ConnectionSlots(total: total).perClient == cap)
        #expect(ReceiverConfig.maxConnectionsPerClient(forMaxConnections: total) == cap)
    }

    @Test("A LAN client gets N connections, the N+1st is refused, and one more once one closes")
    func capForOneClient() {
        let s = ConnectionSlots(total: 16, perClient: 3)
        let camera = ip("192.168.1.20")
        for held in 0..<3 {
            #expect(s.admission(peer: camera, active: held, fromSameClient: held) == .admit)
        }
        #expect(s.admission(peer: camera, active: 3, fromSameClient: 3) == .clientOverCap)
        // Another client is not affected by the camera's count.
        #expect(s.admission(peer: ip("192.168.1.21"), active: 3, fromSameClient: 0) == .admit)
        // One of the camera's connections closed.
        #expect(s.admission(peer: camera, active: 2, fromSameClient: 2) == .admit)
    }

    @Test("Loopback is exempt by default; with the exemption list emptied it is capped too")
    func loopbackExemption() {
        let exemptByDefault = ConnectionSlots(total: 8, perClient: 2)
        #expect(exemptByDefault.admission(peer: IPAddress.loopbackV4, active: 5, fromSameClient: 5) == .admit)
        #expect(exemptByDefault.admission(peer: IPAddress.loopbackV6, active: 5, fromSameClient: 5) == .admit)
        #expect(exemptByDefault.admission(peer: ip("127.0.0.2"), active: 5, fromSameClient: 5) == .admit)
        let none = ConnectionSlots(total: 8, perClient: 2, exempt: [])
        #expect(none.admission(peer: IPAddress.loopbackV4, active: 2, fromSameClient: 2) == .clientOverCap)
        #expect(none.admission(peer: IPAddress.loopbackV4, active: 1, fromSameClient: 1) == .admit)
    }

    @Test("The local submission socket is never capped per client (the board's own programs)")
    func localSocketExempt() {
        let s = ConnectionSlots(total: 8, perClient: 1, exempt: [])
        #expect(s.admission(peer: IPAddress.loopbackV4, local: true, active: 6, fromSameClient: 6) == .admit)
    }

    @Test("A written exemption list covers its networks only")
    func writtenExemption() {
        let s = ConnectionSlots(total: 16, perClient: 1, exempt: [CIDR("192.168.1.0/24")!])
        #expect(s.admission(peer: ip("192.168.1.9"), active: 3, fromSameClient: 3) == .admit)
        #expect(s.admission(peer: ip("192.168.2.9"), active: 3, fromSameClient: 1) == .clientOverCap)
    }

    @Test("The pool limit and the loopback reserve come before the per-client cap (RFC 5321 §3.1: 421)")
    func poolFullFirst() {
        let s = ConnectionSlots(total: 4, perClient: 1, exempt: [])
        // 3 of 4 usable by the LAN (one kept for loopback).
        #expect(s.admission(peer: ip("10.0.0.1"), active: 3, fromSameClient: 1) == .poolFull)
        #expect(s.admission(peer: IPAddress.loopbackV4, active: 4, fromSameClient: 0) == .poolFull)
        #expect(s.admission(peer: IPAddress.loopbackV4, active: 3, fromSameClient: 0) == .admit)
    }

    @Test("A client is its whole address: IPv6 LAN devices sharing a /64 are counted apart; IPv4-mapped is IPv4")
    func sameClient() {
        #expect(!ConnectionSlots.sameClient(ip("fd00:1::10"), ip("fd00:1::11")))
        #expect(ConnectionSlots.sameClient(ip("fd00:1::10"), ip("fd00:1:0:0::10")))
        #expect(ConnectionSlots.sameClient(ip("::ffff:192.168.1.5"), ip("192.168.1.5")))
        #expect(ConnectionSlots.sameClient(ip("192.168.1.5"), ip("::ffff:192.168.1.5")))
        #expect(!ConnectionSlots.sameClient(ip("192.168.1.5"), ip("192.168.1.6")))
        #expect(!ConnectionSlots.sameClient(ip("0.0.0.1"), ip("::1")))
    }

    @Test("A cap of zero or below is taken as one: a client can always get a slot")
    func capAtLeastOne() {
        #expect(ConnectionSlots(total: 4, perClient: 0).perClient == 1)
        #expect(ConnectionSlots(total: 4, perClient: -5).perClient == 1)
    }
}

@Suite("Early talkers before the greeting (RFC 5321 §3.1, §4.3.1)")
struct GreetPolicyTests {
    @Test("Clients outside the exemption wait for the greeting; loopback and local are greeted at once, unchecked")
    func plans() {
        let g = GreetPolicy(pauseSeconds: 1)
        #expect(g.plan(peer: ip("192.168.1.20"), local: false, now: 5) == .pauseUntil(1_000_000_005))
        #expect(g.plan(peer: IPAddress.loopbackV4, local: false, now: 5) == .greetNow(refuseEarlyInput: false))
        #expect(g.plan(peer: IPAddress.loopbackV6, local: false, now: 5) == .greetNow(refuseEarlyInput: false))
        #expect(g.plan(peer: ip("192.168.1.20"), local: true, now: 5) == .greetNow(refuseEarlyInput: false))
    }

    @Test("With the exemption emptied, loopback waits too")
    func emptiedExemption() {
        let g = GreetPolicy(pauseSeconds: 2, exempt: [])
        #expect(g.plan(peer: IPAddress.loopbackV4, local: false, now: 0) == .pauseUntil(2_000_000_000))
        // The local submission socket is always exempt.
        #expect(g.plan(peer: IPAddress.loopbackV4, local: true, now: 0) == .greetNow(refuseEarlyInput: false))
    }

    @Test("Without a pause, input already there at the greeting still refuses a client outside the exemption")
    func noPause() {
        let g = GreetPolicy(pauseSeconds: 0, exempt: [])
        #expect(g.plan(peer: ip("10.1.2.3"), local: false, now: 7) == .greetNow(refuseEarlyInput: true))
    }

    @Test("The pause is bounded (0–60 s) and its end never overflows the clock")
    func bounds() {
        #expect(GreetPolicy(pauseSeconds: 3600).pauseNanoseconds == 60_000_000_000)
        #expect(GreetPolicy(pauseSeconds: -1).pauseNanoseconds == 0)
        let g = GreetPolicy(pauseSeconds: 60, exempt: [])
        #expect(g.plan(peer: ip("10.1.2.3"), local: false, now: Int64.max - 5) == .pauseUntil(Int64.max))
    }

    @Test("The refusal is 554 5.5.0 with our name (RFC 5321 §3.1 allows 554 for the greeting; RFC 3463 §3.6)")
    func reply() {
        let r = GreetPolicy.earlyTalkerReply(hostname: "gw.local")
        #expect(r.code == 554)
        #expect(r.encoded() == Array("554 5.5.0 gw.local Error: SMTP protocol synchronization (input before the greeting)\r\n".utf8))
    }
}

private func refuse(_ t: inout RefusalTally, _ now: Int64) -> Bool { t.refused(now: now) }
private func summarise(_ t: inout RefusalTally, _ now: Int64) -> Int? { t.summary(now: now) }

@Suite("Refused connections are logged at most about once a second (issue 12 item 5)")
struct RefusalTallyTests {
    static let second: Int64 = 1_000_000_000

    @Test("A storm of 1,000 refusals in 2.5 s gives the first line and one summary per second, counting all")
    func storm() {
        var t = RefusalTally()
        var lines = 0, counted = 0
        var now: Int64 = 100
        for _ in 0..<1000 {
            if let n = t.summary(now: now) { lines += 1; counted += n }
            if t.refused(now: now) { lines += 1; counted += 1 }
            now += 2_500_000 // 2.5 ms apart
        }
        // The loop's timer hands over the rest after the storm.
        now += Self.second
        if let n = t.summary(now: now) { lines += 1; counted += n }
        #expect(counted == 1000)
        #expect(lines <= 5, "\(lines) lines")
        #expect(t.summaryDue == nil)
    }

    @Test("A lone refusal after a quiet second is logged in full, and nothing is due after it")
    func lone() {
        var t = RefusalTally()
        do { let r = refuse(&t, 0); #expect(r) }
        #expect(t.summaryDue == nil)
        do { let r = summarise(&t, 5 * Self.second); #expect(r == nil) }
        do { let r = refuse(&t, 6 * Self.second); #expect(r) }
    }

    @Test("Refusals within the window are counted and due at its end")
    func due() {
        var t = RefusalTally()
        do { let r = refuse(&t, 10); #expect(r) }
        do { let r = refuse(&t, 20); #expect(!r) }
        do { let r = refuse(&t, 30); #expect(!r) }
        #expect(t.summaryDue == 10 + Self.second)
        do { let r = summarise(&t, Self.second); #expect(r == nil) }
        do { let r = summarise(&t, 10 + Self.second); #expect(r == 2) }
        #expect(t.summaryDue == nil)
    }

    @Test("A clock at the edges of Int64 neither traps nor leaves a count unsummarised")
    func edges() {
        var t = RefusalTally()
        do { let r = refuse(&t, Int64.max - 1); #expect(r) }
        do { let r = refuse(&t, Int64.max - 1); #expect(!r) }
        #expect(t.summaryDue == Int64.max)
        do { let r = summarise(&t, Int64.min); #expect(r == nil) }
        do { let r = summarise(&t, Int64.max); #expect(r == 1) }
        var u = RefusalTally()
        do { let r = refuse(&u, Int64.min); #expect(r) }
        do { let r = refuse(&u, Int64.max); #expect(r) }
    }
}

@Suite("Configuration: [receiver] limits of issue 12 item 5")
struct ConnectionLimitsConfigTests {
    static let upstreamSection = "\n[upstream]\nhost = smtp.example.com\n"

    func parse(_ receiver: String) -> Result<Config, ConfigError> {
        ConfigParser(file: "/etc/postern/postern.conf", baseDirectory: "/etc/postern")
            .parse(Array(("[receiver]\n" + receiver + "\n" + Self.upstreamSection).utf8))
    }

    @Test("Defaults: half of max_connections per client, loopback exempt, a 1 s greeting pause")
    func defaults() throws {
        let c = try parse("max_connections = 10").get()
        #expect(c.receiver.maxConnectionsPerClient == 5)
        #expect(c.derived.contains("receiver.max_connections_per_client"))
        #expect(c.receiver.connectionLimitExempt == ConnectionSlots.loopbackNetworks)
        #expect(c.receiver.greetPause == 1)
        #expect(c.receiver.greetPauseExempt == ConnectionSlots.loopbackNetworks)
        let d = try parse("").get()
        #expect(d.receiver.maxConnectionsPerClient == 8)
        #expect(!d.derived.contains("receiver.max_connections_per_client"))
    }

    @Test("Written values, and exemption lists written empty (no client exempt)")
    func written() throws {
        let c = try parse("""
        max_connections = 20
        max_connections_per_client = 3
        connection_limit_exempt =
        greet_pause = 0
        greet_pause_exempt = 127.0.0.0/8 ::1, 192.168.1.0/24
        """).get()
        #expect(c.receiver.maxConnectionsPerClient == 3)
        #expect(c.receiver.connectionLimitExempt.isEmpty)
        #expect(c.receiver.greetPause == 0)
        #expect(c.receiver.greetPauseExempt.map { $0.description } == ["127.0.0.0/8", "::1/128", "192.168.1.0/24"])
    }

    @Test("Bad values name the line", arguments: [
        "max_connections_per_client = 0", "max_connections_per_client = 1025", "max_connections_per_client = lots",
        "connection_limit_exempt = 10.0.0.0/33", "greet_pause_exempt = localhost", "greet_pause = 61",
        "greet_pause = 2m", "greet_pause = soon", "greet_pause =", "max_connections_per_client =",
    ])
    func bad(line: String) {
        guard case .failure(let e) = parse(line) else {
            Issue.record("accepted: \(line)")
            return
        }
        #expect(e.line == 2, "\(e)")
    }

    @Test("A cap above max_connections is an error naming both lines, or the default")
    func capAboveTotal() {
        guard case .failure(let e) = parse("max_connections = 4\nmax_connections_per_client = 5") else {
            Issue.record("accepted")
            return
        }
        #expect(e.line == 3)
        #expect(e.message.contains("line 2"))
        guard case .failure(let d) = parse("max_connections_per_client = 17") else {
            Issue.record("accepted")
            return
        }
        #expect(d.message.contains("default, 16"))
        #expect((try? parse("max_connections = 4\nmax_connections_per_client = 4").get()) != nil)
    }
}
