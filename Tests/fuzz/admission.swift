@testable import PosternCore

// Admission of receiver connections (issue 12 item 5): `ConnectionSlots` (the
// pool, the loopback reserve, the cap per client address and its exemption),
// `GreetPolicy` (when a connection is greeted) and `RefusalTally` (the rate
// limit on the log of refusals), driven by a sequence of connects, closes and
// clock steps, as `ReceiverPool` drives them, against a plain model.
//
// Input: max_connections (1–64), the cap per client (0–70, 0 = the default),
// the exemption and pause choices, then two bytes per event.
//
// Checked: no trap; the verdict is the model's; never more connections than
// the pool, nor than the pool less the loopback reserve for others, nor than
// the cap from one client outside the exemption; every plan of the greeting
// is the model's, and a pause ends after it starts; every refusal is in the
// log, in a full line or in a summary, and the log has at most one full line
// and one summary per window of the clock, plus one.

let fuzzPeers: [IPAddress] = [
    IPAddress("127.0.0.1")!, IPAddress("127.0.0.2")!, IPAddress("::1")!, IPAddress("192.168.1.10")!,
    IPAddress("192.168.1.11")!, IPAddress("::ffff:192.168.1.10")!, IPAddress("fd00:1::10")!, IPAddress("fd00:1::11")!,
]
let fuzzExemptions: [[CIDR]] = [
    ConnectionSlots.loopbackNetworks, [], [CIDR("192.168.1.0/24")!], [CIDR("127.0.0.1")!, CIDR("fd00:1::/64")!],
]

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let total = input.int(1...64)
    let capByte = input.int(0...70)
    let choices = input.byte()
    let exempt = fuzzExemptions[Int(choices & 3)]
    let greetExempt = fuzzExemptions[Int(choices >> 2 & 3)]
    let pauseSeconds = input.int(0...70) - 2
    let slots = ConnectionSlots(total: total, perClient: capByte == 0 ? nil : capByte, exempt: exempt)
    let greeting = GreetPolicy(pauseSeconds: pauseSeconds, exempt: greetExempt)
    let window: Int64 = choices & 16 != 0 ? 1_000_000_000 : 50_000_000
    var tally = RefusalTally(window: window)

    require(slots.perClient >= 1, "a cap below one")
    require(slots.reservedForLoopback >= 0 && slots.reservedForLoopback < Swift.max(total, 1), "a reserve of the whole pool")
    require(greeting.pauseNanoseconds >= 0 && greeting.pauseNanoseconds <= Int64(GreetPolicy.maxPauseSeconds) * 1_000_000_000,
            "a pause out of bounds")

    var active: [(peer: IPAddress, local: Bool)] = []
    var now: Int64 = choices & 32 != 0 ? Int64.max - 3_000_000_000 : 0
    let start = now
    var refusals = 0, logged = 0, fullLines = 0, summaryLines = 0

    func takeSummary() {
        if let n = tally.summary(now: now) {
            require(n > 0, "an empty summary")
            logged += n
            summaryLines += 1
        }
    }

    while input.remaining >= 2 {
        let op = input.byte()
        let arg = Int(input.byte())
        switch op % 4 {
        case 0, 1:
            let peer = fuzzPeers[arg % fuzzPeers.count]
            let local = op & 4 != 0
            let same = active.filter { !$0.local && ConnectionSlots.sameClient($0.peer, peer) }.count
            let verdict = slots.admission(peer: peer, local: local, active: active.count, fromSameClient: same)
            // The model.
            let loopback = local || peer.isLoopback
            let usable = loopback ? total : total - slots.reservedForLoopback
            let exemptPeer = local || exempt.contains { $0.contains(peer) }
            let expected: ConnectionSlots.Verdict =
                active.count >= usable ? .poolFull : (!exemptPeer && same >= slots.perClient ? .clientOverCap : .admit)
            require(verdict == expected, "verdict \(verdict == .admit ? "admit" : "refuse") against the model")
            if verdict == .admit {
                active.append((peer, local))
                require(active.count <= total, "more connections than the pool")
                if !exemptPeer {
                    require(same + 1 <= slots.perClient, "over the cap per client")
                }
                switch greeting.plan(peer: peer, local: local, now: now) {
                case .greetNow(let refuse):
                    let greetExemptPeer = local || greetExempt.contains { $0.contains(peer) }
                    require(refuse == !greetExemptPeer, "an exempt client checked, or another not")
                    require(greetExemptPeer || greeting.pauseNanoseconds == 0, "greeted at once despite a pause")
                case .pauseUntil(let t):
                    require(t >= now && greeting.pauseNanoseconds > 0, "a pause ending before it starts")
                    require(!local && !greetExempt.contains { $0.contains(peer) }, "an exempt client paused")
                }
            } else {
                refusals += 1
                takeSummary()
                if tally.refused(now: now) {
                    logged += 1
                    fullLines += 1
                }
            }
        case 2:
            if !active.isEmpty { active.remove(at: arg % active.count) }
        default:
            // The clock steps forward (monotonic), up to just below Int64.max:
            // nanoseconds since boot never get there (292 years), and at
            // Int64.max itself every window has passed, so every refusal would
            // be a full line.
            let step = Int64(arg) * 5_000_000
            let (t, overflow) = now.addingReportingOverflow(step)
            now = overflow || t == Int64.max ? Int64.max - 1 : t
            if let due = tally.summaryDue, now >= due { takeSummary() }
        }
        require(active.count <= total, "more connections than the pool")
    }
    // The loop's timer hands over the last count.
    if let due = tally.summaryDue {
        require(due >= start, "a summary due before the start")
        now = Swift.max(now, due)
        takeSummary()
    }
    require(tally.summaryDue == nil, "a count left after its summary")
    require(logged == refusals, "\(refusals) refusals, \(logged) in the log")
    let windows = Int((now - start) / window) + 1
    require(fullLines <= windows + 1 && summaryLines <= windows + 1,
            "\(fullLines) full lines and \(summaryLines) summaries over \(windows) windows")
}
