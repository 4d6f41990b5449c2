/// Sizes of the fixed buffers, allocated once at start (DESIGN.md principle 2),
/// and the memory budget `postern check-config` prints.
public enum BufferSizes {
    /// Bytes read from a client at a time. At least one 512-octet command line
    /// (RFC 5321 §4.5.3.1.4); larger means fewer reads of message text.
    public static let receiverInput = 16 * 1024
    /// Decoded message text staged for one spool text record: the largest
    /// record a 64 KiB read buffer takes whole. A large message is written in
    /// as few records, so as few writes, as that allows: with 16 KiB records a
    /// 5 MB message cost a quarter more CPU, most of it in the page cache's
    /// per-write work (issue 11). The buffer's pages are touched only as far as
    /// a message fills it: a 2 KB message uses one page of it.
    public static let receiverText = SpoolCodec.maxTextPayload
    /// Replies waiting to go to a client: 100 pipelined RCPT replies take ~1.5 KiB.
    public static let receiverOutput = 4 * 1024
    /// Reply lines from the upstream (512 octets each, RFC 5321 §4.5.3.1.5).
    public static let senderInput = 4 * 1024
    /// Commands and dot-stuffed text going to the upstream.
    public static let senderOutput = 32 * 1024
    /// Spool records read back for sending and for the recovery scan.
    public static let spoolRead = 64 * 1024

    public static var perReceiver: Int { receiverInput + receiverText + receiverOutput }
    public static var sender: Int { senderInput + senderOutput }
}

public struct MemoryBudget: Sendable {
    public var receivers: Int
    public var sender: Int
    public var spool: Int
    /// In-memory index bytes per queued message with one recipient.
    public var perQueuedMessage: Int

    public init(_ config: Config) {
        receivers = config.receiver.maxConnections * BufferSizes.perReceiver
        sender = BufferSizes.sender
        spool = BufferSizes.spoolRead
        // The packed entry: recipient states live inside it up to 32 recipients.
        perQueuedMessage = MemoryLayout<QueuedMessage>.stride
    }

    public var fixedTotal: Int { receivers + sender + spool }

    public func lines(_ config: Config) -> [String] {
        // In 64 bits: max_size may be up to 1 TiB on a 32-bit board too.
        let indexKiB = config.spool.maxBytes / 512 * Int64(perQueuedMessage) / 1024
        return [
            "memory budget (allocated once at start):",
            "  receiver buffers   \(config.receiver.maxConnections) connections x \(BufferSizes.perReceiver / 1024) KiB = \(receivers / 1024) KiB",
            "  sender buffers     \(sender / 1024) KiB",
            "  spool read buffer  \(spool / 1024) KiB",
            "  fixed total        \(fixedTotal / 1024) KiB",
            "  queue index        \(perQueuedMessage) bytes per queued message (+1 per recipient beyond 32);",
            "                     at most \(indexKiB) KiB if max_size were filled with 512-byte messages",
        ]
    }
}
