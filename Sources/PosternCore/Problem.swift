/// A failure described by one sentence a person can act on, for results whose
/// only use is to be logged or shown ("password_file /etc/x is readable by
/// group or others (mode 0644); run: chmod 600 /etc/x").
public struct Problem: Error, Equatable, Sendable, CustomStringConvertible {
    public var text: String

    public init(_ text: String) {
        self.text = text
    }

    public var description: String { text }
}

extension Problem: ExpressibleByStringInterpolation {
    public init(stringLiteral value: String) {
        text = value
    }
}
