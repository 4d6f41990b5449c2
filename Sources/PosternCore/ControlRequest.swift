/// A request on the control socket (`postern queue`, `flush`, `status`), and the
/// parser of what a control client sends.
///
/// The protocol is one line: `queue`, `queue json`, `flush` or `status`, ended by
/// LF (a CR before it is allowed). The daemon answers `OK` or `ERROR <reason>` on
/// the first line, then the body, then closes. The socket is owner-only, but its
/// bytes are still input: the parser never traps and never buffers more than
/// `maxLength` bytes.
public enum ControlRequest: Equatable, Sendable {
    case queue(json: Bool)
    case flush
    case status

    /// Longest request line accepted, LF included.
    public static let maxLength = 256

    /// The line a client sends for this request, LF included.
    public var line: String {
        switch self {
        case .queue(let json): return json ? "queue json\n" : "queue\n"
        case .flush: return "flush\n"
        case .status: return "status\n"
        }
    }

    public enum Parse: Equatable, Sendable {
        /// No LF yet and still under `maxLength`: read more.
        case needMore
        case request(ControlRequest)
        /// The reason, for an `ERROR` answer.
        case invalid(String)
    }

    /// Parses the bytes a control client has sent so far (everything after the
    /// first LF is ignored: one request per connection).
    public static func parse<C: Collection>(_ bytes: C) -> Parse where C.Element == UInt8 {
        guard let lf = bytes.firstIndex(of: ASCII.lf) else {
            return bytes.count >= maxLength ? .invalid("request too long") : .needMore
        }
        var line = Array(bytes[..<lf])
        if line.count >= maxLength { return .invalid("request too long") }
        if line.last == ASCII.cr { line.removeLast() }
        switch String(decoding: line, as: UTF8.self) {
        case "queue": return .request(.queue(json: false))
        case "queue json": return .request(.queue(json: true))
        case "flush": return .request(.flush)
        case "status": return .request(.status)
        default:
            return .invalid("unknown request '\(ASCII.printable(line, limit: 40))' (try queue, queue json, flush, status)")
        }
    }
}
