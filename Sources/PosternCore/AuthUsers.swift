/// The `auth_users` file: who may use AUTH on the receiver (issue 12 item 2),
/// as a pure value parsed from the file's bytes. The crypt(3) check of a
/// password, `postern passwd` and the receiver's use of it live elsewhere;
/// this file only says which users exist and what their hash is.
///
/// ```
/// # user:hash, one a line
/// camera1:$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7
/// grafana:$6$Mqn0I0o5sA9H1wIj$Q2...
/// oldnas:!                        # locked: kept, can never log in
/// ```
///
/// Rules:
/// - One `user:hash` a line, split at the first ':'. Blank lines and lines
///   whose first non-blank character is '#' are ignored; a CR before the LF is
///   allowed. Nothing is trimmed: a blank around the user or the hash is an
///   error, so that what is written is exactly what is compared.
/// - A user name is 1–255 octets of visible ASCII (0x21–0x7E) other than ':'.
///   Non-ASCII names are refused. RFC 4616 §2 (and RFC 4954 §4 through
///   RFC 4422 §4) has the server compare the authcid after SASLprep
///   (RFC 4013); Postern does not implement SASLprep (its NFKC tables alone
///   would outweigh the daemon). On visible ASCII SASLprep is the identity
///   (RFC 4013 §2: no mapping, normalisation or prohibition touches those
///   characters), so comparing bytes is then exactly what the RFC asks. On
///   non-ASCII names it is not: "é" as one code point or as "e" + U+0301 are
///   the same name after SASLprep but different bytes, and a client would be
///   refused for a reason nobody could see. So such names are refused here,
///   with a message, rather than half supported.
/// - Names compare as exact, case-sensitive bytes (`hash(for:)`): SASLprep
///   does not fold case either, and crypt(3) users are case-sensitive.
/// - A hash is 0–512 octets of visible ASCII other than ':' (a second ':'
///   means a line copied from /etc/shadow, which has more fields). Accepted
///   crypt(3) schemes (libxcrypt's strong ones): yescrypt `$y$`,
///   gost-yescrypt `$gy$`, scrypt `$7$`, SHA-512-crypt `$6$`, SHA-256-crypt
///   `$5$`, bcrypt `$2b$`, `$2y$`, `$2a$`. An empty hash, or one that begins
///   with '*' or '!' (as in /etc/shadow), is a locked account: kept, never
///   able to log in. Anything else (MD5-crypt `$1$`, DES, BSDi DES `_`, NT
///   `$3$`, SunMD5, an unknown `$x$`, a plaintext password) is an error
///   naming the line and the user. The error never repeats the hash itself:
///   a "hash" that is not one may be a plaintext password.
/// - A user written twice is an error naming both lines.
///
/// Bounds: the caller reads at most `maxFileSize` (1 MiB) of the file and
/// refuses a larger one (`parse` refuses more bytes than that too); at most
/// `maxUsers` (10,000) users. The parsed value holds each user name and hash
/// once, so it is never larger than about the file plus 100 octets a user
/// (dictionary overhead): at most about 2 MiB.
public struct AuthUsers: Equatable, Sendable {
    /// The largest file accepted, in octets. The caller reads at most this
    /// much (plus one octet, to tell that a file is larger).
    public static let maxFileSize = 1 << 20
    /// The most users in one file.
    public static let maxUsers = 10_000
    /// The longest user name, in octets (RFC 4616 §2: an authcid of up to
    /// 255 octets MUST be accepted).
    public static let maxUserLength = 255
    /// The longest hash, in octets. A yescrypt or SHA-512-crypt string with
    /// explicit parameters is about 130 octets; 512 leaves room.
    public static let maxHashLength = 512

    struct Entry: Equatable, Sendable {
        var hash: AuthHash
        var line: Int
    }

    private var entries: [[UInt8]: Entry] = [:]

    /// An empty set of users (no one can log in).
    public init() {}

    /// The number of users, locked ones included.
    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    /// The hash for `user`, or nil when there is no such user. The comparison
    /// is of exact bytes, case-sensitive (see the type's comment for why).
    /// A locked account gives a hash whose `isLocked` is true.
    public func hash(for user: [UInt8]) -> AuthHash? {
        guard !user.isEmpty, user.count <= Self.maxUserLength else { return nil }
        return entries[user]?.hash
    }

    /// The file line a user was read from, for log lines.
    public func line(for user: [UInt8]) -> Int? {
        guard !user.isEmpty, user.count <= Self.maxUserLength else { return nil }
        return entries[user]?.line
    }

    /// Parses the whole file. Never traps, whatever the bytes.
    public static func parse(_ bytes: [UInt8]) -> Result<AuthUsers, AuthUsersError> {
        do throws(AuthUsersError) {
            return .success(try parseThrowing(bytes))
        } catch {
            return .failure(error)
        }
    }

    static func parseThrowing(_ bytes: [UInt8]) throws(AuthUsersError) -> AuthUsers {
        if bytes.count > maxFileSize {
            throw AuthUsersError(line: 0, message: "the file is larger than 1 MiB (\(maxFileSize) octets)")
        }
        var users = AuthUsers()
        var lineNumber = 0
        // Line by line without materialising the list of lines: 1 MiB of
        // empty lines would be a million 32-octet slices.
        var start = 0
        while start <= bytes.count {
            let end = bytes[start...].firstIndex(of: ASCII.lf) ?? bytes.count
            defer { start = end + 1 }
            lineNumber += 1
            var line = bytes[start..<end]
            if line.last == ASCII.cr { line = line.dropLast() }
            let content = line.drop { ASCII.isSpace($0) }
            if content.isEmpty || content.first == ASCII.hash { continue }

            guard let colon = line.firstIndex(of: ASCII.colon) else {
                throw AuthUsersError(line: lineNumber, message: "no ':' on the line: each line is user:hash")
            }
            let user = line[line.startIndex..<colon]
            let hash = line[line.index(after: colon)...]
            try checkUser(user, line: lineNumber)
            let name = "user '\(ASCII.string(user))'"
            if let earlier = users.entries[Array(user)] {
                throw AuthUsersError(line: lineNumber, message: "\(name) is also on line \(earlier.line)")
            }
            let parsed = try AuthHash.parse(hash, line: lineNumber, user: name)
            if users.entries.count >= maxUsers {
                throw AuthUsersError(line: lineNumber, message: "more than \(maxUsers) users")
            }
            users.entries[Array(user)] = Entry(hash: parsed, line: lineNumber)
        }
        return users
    }

    /// Whether `user` may be a user name of the file (the rules above: 1–255
    /// octets of visible ASCII other than ':', and not beginning with '#',
    /// which would make its line a comment); nil when it may, else the error
    /// (line 0), for `postern passwd`.
    public static func problem(userName user: [UInt8]) -> AuthUsersError? {
        if user.contains(ASCII.colon) {
            return AuthUsersError(line: 0, message: "user '\(visible(user[...]))': a user name cannot contain ':'")
        }
        if user.first == ASCII.hash {
            return AuthUsersError(line: 0, message: "user '\(visible(user[...]))': a user name cannot begin with '#' "
                + "(the line would be a comment)")
        }
        do throws(AuthUsersError) {
            try checkUser(user[...], line: 0)
            return nil
        } catch {
            return error
        }
    }

    /// The result of `setting(user:hash:in:)`.
    public struct Edit: Equatable, Sendable {
        /// The whole new file.
        public var bytes: [UInt8]
        /// The line that was replaced, or nil when the user was added at the end.
        public var replacedLine: Int?
    }

    /// The file `file` with `user`'s line set to `user:hash` (`postern
    /// passwd`): the user's line is replaced in place (keeping a CR before
    /// its LF), or, for a new user, `user:hash` and a LF are added at the end
    /// (after a LF when the file does not end with one). Every other line,
    /// comments and blank lines included, is kept byte for byte. Refused,
    /// naming the line, when the file does not parse (nothing is written over
    /// a file whose meaning is unclear); refused when the user name or the
    /// hash breaks the rules above, or when the result would be larger than
    /// `maxFileSize` or hold more than `maxUsers` users.
    public static func setting(user: [UInt8], hash: [UInt8], in file: [UInt8]) -> Result<Edit, AuthUsersError> {
        let users: AuthUsers
        switch parse(file) {
        case .success(let u): users = u
        case .failure(let e): return .failure(e)
        }
        if let e = problem(userName: user) { return .failure(e) }
        let name = "user '\(ASCII.string(user))'"
        do throws(AuthUsersError) {
            _ = try AuthHash.parse(hash[...], line: 0, user: name)
        } catch {
            return .failure(error)
        }
        var out: [UInt8] = []
        let replaced = users.line(for: user)
        if let target = replaced {
            out.reserveCapacity(file.count + hash.count)
            var lineNumber = 0
            var start = 0
            while start <= file.count {
                let end = file[start...].firstIndex(of: ASCII.lf) ?? file.count
                lineNumber += 1
                if lineNumber == target {
                    out += user
                    out.append(ASCII.colon)
                    out += hash
                    if end > start && file[end - 1] == ASCII.cr { out.append(ASCII.cr) }
                } else {
                    out += file[start..<end]
                }
                if end < file.count { out.append(ASCII.lf) }
                start = end + 1
            }
        } else {
            if users.count >= maxUsers {
                return .failure(AuthUsersError(line: 0, message: "the file already has \(maxUsers) users"))
            }
            out = file
            if let last = out.last, last != ASCII.lf { out.append(ASCII.lf) }
            out += user
            out.append(ASCII.colon)
            out += hash
            out.append(ASCII.lf)
        }
        if out.count > maxFileSize {
            return .failure(AuthUsersError(line: 0, message: "the file would be larger than 1 MiB (\(maxFileSize) octets)"))
        }
        return .success(Edit(bytes: out, replacedLine: replaced))
    }

    /// A user name: 1–255 octets of visible ASCII other than ':' (the ':'
    /// cannot occur: the line was split at the first one).
    static func checkUser(_ user: ArraySlice<UInt8>, line: Int) throws(AuthUsersError) {
        if user.isEmpty {
            throw AuthUsersError(line: line, message: "the user name before ':' is empty")
        }
        if user.count > maxUserLength {
            throw AuthUsersError(line: line, message: "the user name is longer than \(maxUserLength) octets")
        }
        for b in user {
            if b >= 0x80 {
                throw AuthUsersError(line: line, message: "user '\(visible(user))': user names must be ASCII "
                    + "(Postern compares them byte for byte and does not implement SASLprep, RFC 4013, "
                    + "so a non-ASCII name might not match what a client sends)")
            }
            if b <= 0x20 || b == 0x7F {
                throw AuthUsersError(line: line, message: "user '\(visible(user))': a user name cannot contain "
                    + "blanks or control characters")
            }
        }
    }

    /// Bytes for an error message: visible ASCII as is, everything else as
    /// '?', at most 64 characters.
    static func visible(_ bytes: ArraySlice<UInt8>) -> String {
        var out: [UInt8] = []
        for b in bytes.prefix(64) { out.append(b > 0x20 && b < 0x7F ? b : 63) }
        if bytes.count > 64 { out += Array("...".utf8) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// One user's entry in `auth_users`: a crypt(3) string of an accepted
/// scheme, or a locked account.
///
/// `description` names the scheme only, never the hash.
public struct AuthHash: Equatable, Sendable, CustomStringConvertible {
    /// The crypt(3) schemes accepted: those libxcrypt counts as strong.
    public enum Scheme: Equatable, Sendable, CustomStringConvertible {
        case yescrypt, gostYescrypt, scrypt, sha512Crypt, sha256Crypt, bcrypt

        public var description: String {
            switch self {
            case .yescrypt: return "yescrypt"
            case .gostYescrypt: return "gost-yescrypt"
            case .scrypt: return "scrypt"
            case .sha512Crypt: return "sha512-crypt"
            case .sha256Crypt: return "sha256-crypt"
            case .bcrypt: return "bcrypt"
            }
        }
    }

    /// nil for a locked account (an empty hash, or one beginning with '*'
    /// or '!').
    public let scheme: Scheme?
    /// The crypt(3) string as written in the file (prefix, parameters, salt
    /// and hash), to give to crypt_rn() as the setting; empty when locked.
    public let text: [UInt8]

    /// The account can never log in: refuse without calling crypt(3) (the
    /// caller still spends the time of a check, so that timing does not tell
    /// a locked or unknown user from a wrong password).
    public var isLocked: Bool { scheme == nil }

    public var description: String {
        scheme.map { $0.description } ?? "locked"
    }

    /// A locked account.
    public static let locked = AuthHash(scheme: nil, text: [])

    init(scheme: Scheme?, text: [UInt8]) {
        self.scheme = scheme
        self.text = text
    }

    /// The prefixes of the accepted schemes. Every one ends in '$', so none
    /// is a prefix of another ("$2b$" vs "$2y$", "$y$" vs "$gy$").
    static let accepted: [(prefix: [UInt8], scheme: Scheme)] = [
        (Array("$y$".utf8), .yescrypt),
        (Array("$gy$".utf8), .gostYescrypt),
        (Array("$7$".utf8), .scrypt),
        (Array("$6$".utf8), .sha512Crypt),
        (Array("$5$".utf8), .sha256Crypt),
        (Array("$2b$".utf8), .bcrypt),
        (Array("$2y$".utf8), .bcrypt),
        (Array("$2a$".utf8), .bcrypt),
    ]

    /// The hash field of one line. `user` is "user 'name'" for messages.
    static func parse(_ hash: ArraySlice<UInt8>, line: Int, user: String) throws(AuthUsersError) -> AuthHash {
        if hash.count > AuthUsers.maxHashLength {
            throw AuthUsersError(line: line, message: "\(user): the hash is longer than \(AuthUsers.maxHashLength) octets")
        }
        for b in hash {
            if b == ASCII.colon {
                throw AuthUsersError(line: line, message: "\(user): more than one ':' on the line "
                    + "(a line copied from /etc/shadow has more fields); each line is user:hash")
            }
            if b <= 0x20 || b >= 0x7F {
                throw AuthUsersError(line: line, message: "\(user): the hash may contain only visible ASCII "
                    + "characters (no blanks, control characters or non-ASCII)")
            }
        }
        // Locked accounts, as in shadow(5): "*" or a "!" before a hash.
        if hash.isEmpty || hash.first == 42 /* * */ || hash.first == 33 /* ! */ {
            return .locked
        }
        for (prefix, scheme) in accepted where hash.starts(with: prefix) {
            if hash.count == prefix.count {
                throw AuthUsersError(line: line, message: "\(user): the hash is only the scheme prefix "
                    + "\(ASCII.string(prefix)), with no salt or hash; make one with postern passwd")
            }
            return AuthHash(scheme: scheme, text: Array(hash))
        }
        throw AuthUsersError(line: line, message: "\(user): the hash scheme \(weakSchemeName(hash)) is too weak "
            + "or unknown; make one with postern passwd")
    }

    /// A name for a refused hash's scheme that does not repeat the hash.
    static func weakSchemeName(_ hash: ArraySlice<UInt8>) -> String {
        func isCryptChar(_ b: UInt8) -> Bool {
            ASCII.isAlpha(b) || ASCII.isDigit(b) || b == ASCII.dot || b == 47 /* / */
        }
        if hash.first == 36 /* $ */ {
            let rest = hash.dropFirst()
            if let end = rest.firstIndex(of: 36) {
                let id = rest[rest.startIndex..<end]
                if id.count <= 8 {
                    // Compared as bytes: String comparison would bring
                    // Unicode normalisation into the Embedded binary.
                    let known: [(id: String, name: String)] = [
                        ("1", "MD5-crypt"), ("3", "NT hash"), ("md5", "SunMD5"), ("sha1", "SHA1-crypt"),
                        ("2", "original bcrypt"), ("2x", "buggy bcrypt"),
                    ]
                    let text = "$" + AuthUsers.visible(id) + "$"
                    for k in known where id.elementsEqual(k.id.utf8) { return text + " (" + k.name + ")" }
                    return text
                }
            }
            return "(not a crypt(3) string)"
        }
        if hash.count == 13, hash.allSatisfy(isCryptChar) { return "DES" }
        if hash.count == 20, hash.first == 95 /* _ */, hash.dropFirst().allSatisfy(isCryptChar) { return "BSDi DES (_)" }
        return "(not a crypt(3) string)"
    }
}

/// An error in `auth_users`: the line (0 for the whole file) and what is wrong.
/// The caller puts the file's name in front, as in `ConfigError`.
public struct AuthUsersError: Error, Equatable, Sendable, CustomStringConvertible {
    public var line: Int
    public var message: String

    public init(line: Int, message: String) {
        self.line = line
        self.message = message
    }

    /// "line N: message", or the message alone for the whole file.
    public var description: String {
        line > 0 ? "line \(line): \(message)" : message
    }
}
