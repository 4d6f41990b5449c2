import CLibc

/// An errno value from a failed system call, with the call's name for messages.
public struct Errno: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32
    public let call: String

    public init(_ code: Int32, _ call: String) {
        self.code = code
        self.call = call
    }

    /// errno of the calling thread, right after a failed call.
    public static func current(_ call: String) -> Errno { Errno(cl_errno(), call) }

    public var isWouldBlock: Bool { code == EAGAIN || code == EWOULDBLOCK }
    /// No space: ENOSPC, or EDQUOT from a quota.
    public var isNoSpace: Bool { code == ENOSPC || code == EDQUOT }

    public var text: String {
        guard let s = strerror(code) else { return "errno \(code)" }
        return String(cString: s)
    }

    public var description: String { "\(call): \(text)" }
}
