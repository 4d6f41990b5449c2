/// The client side of the SASL mechanisms Postern speaks to an upstream
/// (RFC 4954 AUTH). Each function builds the bytes of one response; none keeps
/// the secret, and callers wipe the arrays they pass in and get back.
public enum SASL {
    /// The mechanism to use, from the configured choice and what the upstream
    /// offered in its EHLO reply (RFC 4954 §3: keywords, case-insensitive).
    /// nil when the upstream offers nothing usable; the error says what it offers.
    public static func choose(_ choice: AuthChoice, offered: [String]) -> Result<AuthChoice, SenderFailure> {
        func has(_ m: String) -> Bool { offered.contains(m) }
        let list = offered.isEmpty ? "no AUTH at all" : "AUTH " + offered.joined(separator: " ")
        switch choice {
        case .none: return .success(.none)
        case .auto:
            if has("PLAIN") { return .success(.plain) }
            if has("LOGIN") { return .success(.login) }
            return .failure(.auth("the upstream offers neither AUTH PLAIN nor LOGIN (it offers \(list))"))
        case .plain, .login, .xoauth2:
            let name = choice.name.uppercasedASCII
            if has(name) { return .success(choice) }
            return .failure(.auth("the upstream does not offer AUTH \(name) (it offers \(list))"))
        }
    }

    /// RFC 4616 §2: [authzid] NUL authcid NUL passwd, base64-encoded.
    public static func plain(username: String, secret: [UInt8]) -> [UInt8] {
        var message: [UInt8] = [0]
        message += Array(username.utf8)
        message.append(0)
        message += secret
        defer { wipe(&message) }
        return Base64.encode(message)
    }

    /// Google's and Microsoft's XOAUTH2: "user=" user ^A "auth=Bearer " token ^A ^A,
    /// base64-encoded.
    public static func xoauth2(username: String, token: [UInt8]) -> [UInt8] {
        var message = Array("user=".utf8) + Array(username.utf8) + [1] + Array("auth=Bearer ".utf8)
        message += token
        message += [1, 1]
        defer { wipe(&message) }
        return Base64.encode(message)
    }

    /// Zeroes a buffer that held a secret.
    public static func wipe(_ bytes: inout [UInt8]) {
        for i in bytes.indices { bytes[i] = 0 }
    }

    /// The secret as read from a file or a command: the first line, without its
    /// line ending and without trailing blanks (`echo token > file` adds a LF).
    /// Copies only the secret itself, so the caller can wipe both.
    public static func firstLine<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        var end = 0
        var length = 0
        for b in bytes {
            if b == ASCII.lf || b == ASCII.cr { break }
            length += 1
            if !ASCII.isSpace(b) { end = length }
        }
        var out: [UInt8] = []
        out.reserveCapacity(end)
        for b in bytes.prefix(end) { out.append(b) }
        return out
    }
}
