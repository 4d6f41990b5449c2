import PosternCore

/// The text of the message being sent, on its way from the spool to the wire:
/// read in records (`MessageReader`), the `From:` header rewritten when the
/// upstream asks for it (`FromRewriter`, issue 8 item 7), then dot-stuffed with
/// the end-of-data marker (`DataEncoder`). Every stage streams through fixed
/// buffers, so a 20 MB message costs no more memory than a 2 KB one.
final class OutboundText {
    let reader = MessageReader()
    private var encoder = DataEncoder()
    /// Kept from message to message (its buffers are reserved once) while the
    /// address stays the same.
    private var rewriter: FromRewriter? = nil
    private var rewriterFor: (address: Mailbox, domain: String)? = nil
    private var rewriting = false
    /// The rewriter's output waiting for the encoder; made on first use.
    private var staged: ByteBuffer? = nil
    private var ended = false

    static let stagedCapacity = 4 * 1024

    enum Fill {
        /// The output is full; call again once it has drained.
        case more
        /// The whole text and the end-of-data marker are in the output.
        case done
        case failed(MessageReader.Failure)
    }

    /// Starts a message: `rewriteFrom` is the upstream's `envelope_from` when its
    /// `rewrite_from` is set, `qualifyDomain` the board's name for `From: root`.
    func begin(rewriteFrom: Mailbox?, qualifyDomain: String) {
        encoder = DataEncoder()
        ended = false
        staged?.clear()
        rewriting = rewriteFrom != nil
        if let address = rewriteFrom {
            if let made = rewriterFor, made.address == address, made.domain == qualifyDomain {
                rewriter?.reset()
            } else {
                rewriter = FromRewriter(sender: address, qualifyDomain: qualifyDomain)
                rewriterFor = (address, qualifyDomain)
            }
            if staged == nil { staged = ByteBuffer(capacity: Self.stagedCapacity) }
        }
    }

    /// Bytes the rewriting may add to the spooled size (for SIZE=, RFC 1870).
    var sizeAllowance: Int { rewriting ? FromRewriter.maxGenerated : 0 }

    /// Fills `output` with wire text, keeping room for the terminator (at most 5
    /// bytes), and appends the terminator after the last text.
    func fill(_ output: ByteBuffer, spool: Spool) -> Fill {
        while true {
            if output.freeSpace < 64 { output.compact() }
            if output.freeSpace < 64 { return .more }
            let plain: UnsafeRawBufferPointer
            if rewriting, let staged = staged {
                if staged.isEmpty {
                    staged.compact()
                    if reader.pendingText.isEmpty && !ended {
                        switch reader.next(spool: spool) {
                        case .success(.text): continue
                        case .success(.end): ended = true
                        case .failure(let f): return .failed(f)
                        }
                    }
                    if !reader.pendingText.isEmpty {
                        guard let step = rewriter?.rewrite(reader.pendingText, into: staged.writable) else { return .more }
                        reader.advance(step.consumed)
                        staged.didWrite(step.produced)
                    } else if let ending = rewriter?.finish(into: staged.writable) {
                        staged.didWrite(ending.produced)
                        if ending.done && staged.isEmpty { return finish(output) }
                    }
                    continue
                }
                plain = staged.readable
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
            if rewriting { staged?.consume(step.consumed) } else { reader.advance(step.consumed) }
            output.didWrite(step.produced)
        }
    }

    private func finish(_ output: ByteBuffer) -> Fill {
        output.append(encoder.terminator())
        return .done
    }
}
