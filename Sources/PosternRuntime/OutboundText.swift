import PosternCore

/// The text of the message being sent, on its way from the spool to the wire:
/// read in records (`MessageReader`), the header rewritten where the upstream
/// asks for it — `From:` (`FromRewriter`, issue 8 item 7) and then local
/// addresses in `To:`/`Cc:` (`RecipientRewriter`, issue 9 item 4) — and
/// dot-stuffed with the end-of-data marker (`DataEncoder`). Every stage streams
/// through fixed buffers, so a 20 MB message costs no more memory than a 2 KB one.
final class OutboundText {
    /// Keeps the segment open between messages, until the spool deletes it
    /// (`Spool.segmentDeleted`) or the connection closes.
    let reader = MessageReader(keepsFileOpen: true)
    private var encoder = DataEncoder()
    /// Kept from message to message (their buffers are reserved once) while
    /// what they were made for stays the same.
    private var fromRewriter: (rewriter: FromRewriter, address: Mailbox, domain: String)? = nil
    private var toRewriter: (rewriter: RecipientRewriter, aliases: AliasMap)? = nil
    /// The rewriting stages of this message, in order; each has its own output.
    private var stages: [Stage] = []
    /// The reader gave its last record.
    private var ended = false

    static let stagedCapacity = 4 * 1024

    enum Rewriter {
        case from
        case to
    }

    struct Stage {
        let rewriter: Rewriter
        let out: ByteBuffer
        var finished = false
    }

    /// Stage buffers, made on first use and kept.
    private var buffers: [ByteBuffer] = []

    enum Fill {
        /// The output is full; call again once it has drained.
        case more
        /// The whole text and the end-of-data marker are in the output.
        case done
        case failed(MessageReader.Failure)
    }

    /// Starts a message: `rewriteFrom` is the upstream's `envelope_from` when its
    /// `rewrite_from` is set, `qualifyDomain` the board's name for `From: root`;
    /// `rewriteTo` the aliases when its `rewrite_to` is set.
    func begin(rewriteFrom: Mailbox?, qualifyDomain: String, rewriteTo: AliasMap? = nil) {
        encoder = DataEncoder()
        ended = false
        stages.removeAll(keepingCapacity: true)
        if let address = rewriteFrom {
            if let made = fromRewriter, made.address == address, made.domain == qualifyDomain {
                fromRewriter?.rewriter.reset()
            } else {
                fromRewriter = (FromRewriter(sender: address, qualifyDomain: qualifyDomain), address, qualifyDomain)
            }
            stages.append(Stage(rewriter: .from, out: buffer(stages.count)))
        }
        if let aliases = rewriteTo {
            if let made = toRewriter, made.aliases == aliases {
                toRewriter?.rewriter.reset()
            } else {
                toRewriter = (RecipientRewriter(aliases: aliases), aliases)
            }
            stages.append(Stage(rewriter: .to, out: buffer(stages.count)))
        }
    }

    private func buffer(_ index: Int) -> ByteBuffer {
        while buffers.count <= index { buffers.append(ByteBuffer(capacity: Self.stagedCapacity)) }
        buffers[index].clear()
        return buffers[index]
    }

    /// Bytes the rewriting may add to the spooled size (for SIZE=, RFC 1870).
    var sizeAllowance: Int {
        stages.reduce(0) { sum, stage in
            sum + (stage.rewriter == .from ? FromRewriter.maxGenerated : RecipientRewriter.maxGrowth)
        }
    }

    /// Fills `output` with wire text, keeping room for the terminator (at most 5
    /// bytes), and appends the terminator after the last text.
    func fill(_ output: ByteBuffer, spool: Spool) -> Fill {
        while true {
            if output.freeSpace < 64 { output.compact() }
            if output.freeSpace < 64 { return .more }
            let plain: UnsafeRawBufferPointer
            if let last = stages.indices.last {
                if let failure = pump(last, spool: spool) { return .failed(failure) }
                if stages[last].out.isEmpty { return finish(output) }   // finished
                plain = stages[last].out.readable
            } else {
                if reader.pendingText.isEmpty {
                    switch reader.next(spool: spool) {
                    case .success(.text): continue
                    case .success(.end): return finish(output)
                    case .failure(let f): return .failed(f)
                    }
                }
                plain = reader.pendingText
            }
            let room = UnsafeMutableRawBufferPointer(rebasing: output.writable[0..<(output.freeSpace - 5)])
            let step = encoder.encode(plain, into: room)
            if let last = stages.indices.last { stages[last].out.consume(step.consumed) } else { reader.advance(step.consumed) }
            output.didWrite(step.produced)
        }
    }

    /// Runs stage `k` until its output holds something or it has finished
    /// (pulling from the stage before it, or the reader). Each rewriter makes
    /// progress whenever it has input and output room, so this ends.
    private func pump(_ k: Int, spool: Spool) -> MessageReader.Failure? {
        while stages[k].out.isEmpty && !stages[k].finished {
            stages[k].out.compact()
            let input: UnsafeRawBufferPointer
            if k == 0 {
                if reader.pendingText.isEmpty && !ended {
                    switch reader.next(spool: spool) {
                    case .success(.text): continue
                    case .success(.end): ended = true
                    case .failure(let f): return f
                    }
                }
                input = reader.pendingText
            } else {
                if stages[k - 1].out.isEmpty && !stages[k - 1].finished {
                    if let f = pump(k - 1, spool: spool) { return f }
                    continue
                }
                input = stages[k - 1].out.readable
            }
            let out = stages[k].out.writable
            if input.isEmpty {
                // Everything before this stage is through: its end.
                let ending = finish(stages[k].rewriter, into: out)
                stages[k].out.didWrite(ending.produced)
                if ending.done { stages[k].finished = true }
                continue
            }
            let step = rewrite(stages[k].rewriter, input, into: out)
            if k == 0 { reader.advance(step.consumed) } else { stages[k - 1].out.consume(step.consumed) }
            stages[k].out.didWrite(step.produced)
            if step.consumed == 0 && step.produced == 0 {
                // Against the rewriters' progress guarantee: fail this attempt
                // (the message stays queued) rather than spin or send it cut.
                return .corrupt("a header rewriter made no progress")
            }
        }
        return nil
    }

    private func rewrite(_ r: Rewriter, _ input: UnsafeRawBufferPointer,
                         into out: UnsafeMutableRawBufferPointer) -> (consumed: Int, produced: Int) {
        switch r {
        case .from: if let s = fromRewriter?.rewriter.rewrite(input, into: out) { return (s.consumed, s.produced) }
        case .to: if let s = toRewriter?.rewriter.rewrite(input, into: out) { return (s.consumed, s.produced) }
        }
        return (0, 0)
    }

    private func finish(_ r: Rewriter, into out: UnsafeMutableRawBufferPointer) -> (produced: Int, done: Bool) {
        switch r {
        case .from: if let e = fromRewriter?.rewriter.finish(into: out) { return (e.produced, e.done) }
        case .to: if let e = toRewriter?.rewriter.finish(into: out) { return (e.produced, e.done) }
        }
        return (0, true)
    }

    private func finish(_ output: ByteBuffer) -> Fill {
        output.append(encoder.terminator())
        return .done
    }
}
