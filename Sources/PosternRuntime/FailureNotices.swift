import CLibc
import PosternCore

/// Delivery status notifications (RFC 3464, issue 8 item 6): when recipients
/// are refused for good (5xx) or a message passes `[spool] max_age`, one notice
/// goes to the envelope sender — or to `[notify] postmaster` when the sender is
/// empty or local to the board (`NoticePolicy`). The notice is spooled like any
/// message and retried like one; it is written before the recipients are
/// recorded as finished, in the same group commit, so a restart either has both
/// or neither and never repeats a notice.
///
/// Never a notice about a notice: notices go out with the null reverse-path and
/// are marked in the spool (flags bit 3); one that fails is logged and dropped.
final class FailureNotices {
    var policy: NoticePolicy
    var hostname: String
    let spool: Spool
    let log: Log
    /// Reads the failed message's header section, apart from the reader that
    /// streams the message being sent.
    private let reader = MessageReader()

    init(postmaster: Mailbox?, hostname: String, spool: Spool, log: Log) {
        policy = NoticePolicy(postmaster: postmaster, hostname: hostname)
        self.hostname = hostname
        self.spool = spool
        self.log = log
    }

    /// One recipient given up: its index in the spooled envelope and why.
    struct Failed {
        var index: Int
        /// RFC 3463 code: the upstream's, or 4.4.7 for an expired message.
        var status: String
        var reply: String?
        /// The upstream's host name, when one answered.
        var upstream: String?
    }

    /// Queues one notice for message `id` about `failed`. Call before their
    /// failed outcomes are recorded.
    func send(about id: UInt64, failed: [Failed], reason: DeliveryReport.Reason, now: Int64) {
        guard !failed.isEmpty, let m = spool.queue.message(id) else { return }
        let queueID = Spool.queueID(id)
        let envelope: SpoolCodec.EnvelopeRecord
        switch reader.open(m, spool: spool) {
        case .success(let e): envelope = e
        case .failure(let f):
            log.error("cannot read a failed message to write its failure notice; none is sent",
                      [("queue_id", queueID), ("error", f.description)])
            return
        }
        let header = headerSection()
        let utf8 = envelope.smtputf8
        guard let sender = Mailbox.parse(envelope.from[...], allowNull: true, utf8: utf8) else { return }
        let wall = Clock.wall()
        var recipients: [DeliveryReport.Recipient] = []
        var unwanted: [String] = []
        for f in failed where f.index >= 0 && f.index < envelope.recipients.count {
            guard let address = Mailbox.parse(envelope.recipients[f.index][...], allowNull: false, utf8: utf8) else { continue }
            // RFC 3461 §4.1: a failure notice only where NOTIFY asked for one
            // (NEVER, or SUCCESS/DELAY without FAILURE, ask for none); no
            // NOTIFY means the default, a notice on failure.
            if f.index < envelope.recipientParameters.count,
               let notify = envelope.recipientParameters[f.index].notify, !notify.wantsFailureNotice {
                unwanted.append(address.description)
                continue
            }
            var r = DeliveryReport.Recipient(address: address, status: f.status, reply: f.reply,
                                             upstream: f.upstream, lastAttempt: f.upstream == nil ? nil : wall)
            // RFC 3461 §6.3 (d): Original-Recipient from the recipient's ORCPT.
            if f.index < envelope.recipientParameters.count, let o = envelope.recipientParameters[f.index].orcpt {
                r.originalRecipient = DSNParameters.originalRecipientField(o)
            }
            recipients.append(r)
        }
        if !unwanted.isEmpty {
            log.info("no failure notice for recipients whose NOTIFY did not ask for one",
                     [("queue_id", queueID), ("rcpt", unwanted.joined(separator: ","))])
        }
        guard !recipients.isEmpty else { return }
        let destination = policy.destination(sender: sender, failedMessageIsNotice: envelope.notice)
        let to: Mailbox
        switch destination {
        case .sender(let m), .postmaster(let m):
            to = m
        case .logOnly(let why):
            let text = why == .failedMessageIsNotice
                ? "a failure notice could not be delivered; it is dropped (never a notice about a notice)"
                : "no failure notice sent: the sender is not a remote address and [notify] postmaster is not set"
            log.error(text, [("queue_id", queueID), ("from", sender.description),
                             ("rcpt", recipients.map { $0.address.description }.joined(separator: ","))])
            return
        }
        var report = DeliveryReport(
            reportingHost: hostname, noticeRecipient: to, originalSender: sender, queueID: queueID,
            arrival: envelope.arrivalSynchronised ? envelope.arrival : nil, reportTime: wall,
            utcOffset: Int(cl_utc_offset(wall)), recipients: recipients, reason: reason,
            boundary: "=_postern_" + ASCII.hex(Clock.random(), width: 16),
            messageID: "<\(queueID).\(ASCII.hex(Clock.random() & 0xffff_ffff, width: 8)).notice@\(hostname)>",
            originalHeader: header)
        // RFC 3461 §6.3 (a): Original-Envelope-Id from ENVID. The notice returns
        // the header section only, whatever RET says: what RET=HDRS asks for,
        // and less than RET=FULL would like (see DeliveryReport).
        report.originalEnvelopeID = envelope.envelopeID.flatMap { DSNParameters.envelopeIDField($0) }
        var text = report.compose()
        // Header fields of a notice are ours, but an 8-bit original header makes it 8-bit.
        let eightBit = text.contains { $0 >= 0x80 }
        var env = Envelope(heloName: hostname, esmtp: true, from: Mailbox.null, recipients: [to], eightBit: eightBit)
        // A notice to a UTF-8 address needs SMTPUTF8 itself (RFC 6531 §3.4).
        // Its own header section is otherwise ASCII; a UTF-8 original header
        // goes back inside the text/rfc822-headers part as 8-bit body text
        // (RFC 6533 §6 would use message/global-headers; not done here).
        env.smtputf8 = !to.isASCII
        let clock = Clock.reading()
        var t: SpoolTransaction
        switch spool.begin(env, arrival: clock.wall, arrivalSynchronised: clock.synchronised, notice: true, now: now) {
        case .success(let tx): t = tx
        case .failure(let e):
            log.error("cannot queue a failure notice", [("queue_id", queueID), ("notice_to", to.description),
                                                        ("error", e.description)])
            return
        }
        let appended = text.withUnsafeBytes { spool.appendText(&t, $0, now: now) }
        text.removeAll()
        if case .failure(let e) = appended {
            spool.abort(t, now: now)
            log.error("cannot queue a failure notice", [("queue_id", queueID), ("error", e.description)])
            return
        }
        if case .failure(let e) = spool.commit(t, now: now) {
            log.error("cannot queue a failure notice", [("queue_id", queueID), ("error", e.description)])
            return
        }
        log.notice("failure notice queued", [("queue_id", queueID), ("notice_id", Spool.queueID(t.id)),
                                             ("notice_to", to.description), ("failed", "\(recipients.count)")])
    }

    /// The first `DeliveryReport.maxHeaderSection` bytes of the opened message's
    /// header section (cut at a field boundary).
    private func headerSection() -> [UInt8] {
        var bytes: [UInt8] = []
        let limit = DeliveryReport.maxHeaderSection + 2
        var whole = false
        while bytes.count < limit {
            if reader.pendingText.isEmpty {
                switch reader.next(spool: spool) {
                case .success(.text): continue
                case .success(.end), .failure: whole = true
                }
                break
            }
            let take = min(reader.pendingText.count, limit - bytes.count)
            bytes += UnsafeRawBufferPointer(rebasing: reader.pendingText[0..<take])
            reader.advance(take)
        }
        let n = DeliveryReport.headerSectionLength(bytes, isWholeMessage: whole)
        return Array(bytes.prefix(n))
    }
}
