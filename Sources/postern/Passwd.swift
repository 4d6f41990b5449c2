import CLibc
import PosternCore
import PosternRuntime

// `postern passwd USER [--file PATH] [--config FILE]` (issue 12 item 2): adds
// USER to the `auth_users` file, or gives an existing USER a new password.
//
// The password is read twice from the terminal without echo, or once (its
// first line) from standard input when that is not a terminal, for scripts.
// It is hashed with yescrypt (`$y$`, libxcrypt's default cost) and wiped.
// The file is edited by `AuthUsers.setting` (every other line kept byte for
// byte; refused when the file does not parse) and replaced atomically with
// its mode and owner kept (`cl_replace_file`; a new file gets mode 0600).

let passwdUsage = "usage: postern passwd USER [--file PATH] [--config FILE]\n"

func passwdCommand(_ args: [String]) -> Int32 {
    var user: String? = nil
    var file: String? = nil
    var configPath = configPathFromEnvironment()
    var i = 0
    while i < args.count {
        let a = args[i]
        switch a {
        case "--file", "--config", "-c":
            guard i + 1 < args.count else {
                Sys.writeStderr("postern passwd: \(a) needs a file\n\(passwdUsage)")
                return exUsage
            }
            if a == "--file" { file = args[i + 1] } else { configPath = args[i + 1] }
            i += 2
        default:
            if a.utf8.first == 45 /* - */ && a != "-" {
                Sys.writeStderr("postern passwd: unknown option '\(a)'\n\(passwdUsage)")
                return exUsage
            }
            if user != nil {
                Sys.writeStderr("postern passwd: one user at a time\n\(passwdUsage)")
                return exUsage
            }
            user = a
            i += 1
        }
    }
    guard let name = user else {
        Sys.writeStderr("postern passwd: which user?\n\(passwdUsage)")
        return exUsage
    }
    let userBytes = Array(name.utf8)
    if let e = AuthUsers.problem(userName: userBytes) {
        Sys.writeStderr("postern passwd: \(e.message)\n")
        return exUsage
    }

    let path: String
    if let f = file {
        path = f
    } else {
        switch authUsersSetting(configPath) {
        case .success(let p?): path = p
        case .success(nil):
            Sys.writeStderr("postern passwd: \(configPath) does not exist or sets no [receiver] auth_users; name the file with --file PATH\n")
            return exUsage
        case .failure(let e):
            Sys.writeStderr("postern passwd: \(e.message)\n")
            return exConfig
        }
    }

    // The file is checked before the password is asked for: a file that
    // does not parse would make the typing useless.
    var old: [UInt8] = []
    switch Sys.readFile(path, limit: AuthUsers.maxFileSize + 1) {
    case .success(let b): old = b
    case .failure(let e) where e.code == ENOENT: old = []
    case .failure(let e):
        Sys.writeStderr("postern passwd: cannot read \(path): \(e.text)\n")
        return exIOErr
    }
    if case .failure(let e) = AuthUsers.parse(old) {
        Sys.writeStderr("postern passwd: \(path): \(e); nothing was changed\n")
        return exConfig
    }

    var password: [UInt8]
    switch readNewPassword() {
    case .success(let p): password = p
    case .failure(let exit): return exit.code
    }
    var hash = [CChar](repeating: 0, count: Int(CL_CRYPT_OUTPUT_SIZE))
    let made = password.withUnsafeBufferPointer { p in
        p.withMemoryRebound(to: CChar.self) { cl_crypt_make($0.baseAddress, $0.count, "$y$", &hash, hash.count) }
    }
    SASL.wipe(&password)
    guard made == 0 else {
        Sys.writeStderr("postern passwd: crypt: \(Errno.current("crypt_rn").text)\n")
        return exSoftware
    }
    let hashBytes = hash.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }

    let edit: AuthUsers.Edit
    switch AuthUsers.setting(user: userBytes, hash: hashBytes, in: old) {
    case .success(let e): edit = e
    case .failure(let e):
        Sys.writeStderr("postern passwd: \(path): \(e); nothing was changed\n")
        return exConfig
    }
    var step: UnsafePointer<CChar>? = nil
    let written = edit.bytes.withUnsafeBytes { cl_replace_file(path, $0.baseAddress, $0.count, &step) }
    guard written == 0 else {
        let e = Errno.current("write")
        let call = step.map { String(cString: $0) } ?? "write"
        Sys.writeStderr("postern passwd: cannot write \(path): \(call): \(e.text); nothing was changed\n")
        return exIOErr
    }
    if let line = edit.replacedLine {
        Sys.writeStdout("postern passwd: new password for \(name) in \(path) (line \(line))\n")
    } else {
        Sys.writeStdout("postern passwd: added \(name) to \(path)\n")
    }
    return 0
}

/// The new password: twice from a terminal without echo, or the first line of
/// standard input. Refuses an empty one, one over 255 octets (RFC 4616 §2:
/// what every client and server must accept), and one holding NUL, CR or LF
/// (SASL PLAIN cannot carry NUL; CR and LF are not typed, only pasted).
func readNewPassword() -> Result<[UInt8], Exit> {
    let max = Int(CL_CRYPT_MAX_PASSWORD)
    var password: [UInt8]
    if isatty(0) == 1 {
        var first: [UInt8]
        switch readTerminalLine("Password: ", max: max) {
        case .success(let p): first = p
        case .failure(let e): return .failure(e)
        }
        if first.isEmpty {
            Sys.writeStderr("postern passwd: the password is empty; nothing was changed\n")
            return .failure(Exit(code: exDataErr))
        }
        var second: [UInt8]
        switch readTerminalLine("Password again: ", max: max) {
        case .success(let p): second = p
        case .failure(let e):
            SASL.wipe(&first)
            return .failure(e)
        }
        let same = first == second
        SASL.wipe(&second)
        if !same {
            SASL.wipe(&first)
            Sys.writeStderr("postern passwd: the two passwords differ; nothing was changed\n")
            return .failure(Exit(code: exDataErr))
        }
        password = first
    } else {
        // One line from a script; a longer input than a password and a line
        // ending can be is refused as too long.
        var buffer = [UInt8](repeating: 0, count: max + 3)
        var total = 0
        while total < buffer.count {
            let r = buffer.withUnsafeMutableBytes { Sys.read(0, UnsafeMutableRawBufferPointer(rebasing: $0[total...])) }
            switch r {
            case .success(.done(let n)): total += n
            case .success(.eof), .success(.wouldBlock): break
            case .failure(let e):
                SASL.wipe(&buffer)
                Sys.writeStderr("postern passwd: cannot read standard input: \(e.text)\n")
                return .failure(Exit(code: exIOErr))
            }
            if case .success(.done) = r { continue }
            break
        }
        var end = total
        if end > 0 && buffer[end - 1] == ASCII.lf { end -= 1 }
        password = Array(buffer[0..<end])
        SASL.wipe(&buffer)
    }
    let problem: String?
    if password.isEmpty { problem = "the password is empty" }
    else if password.count > max { problem = "the password is longer than \(max) octets" }
    else if password.contains(0) { problem = "the password contains a NUL octet" }
    else if password.contains(ASCII.cr) || password.contains(ASCII.lf) {
        problem = "the password contains a line break (CR or LF); give it as one line"
    } else { problem = nil }
    if let p = problem {
        SASL.wipe(&password)
        Sys.writeStderr("postern passwd: \(p); nothing was changed\n")
        return .failure(Exit(code: exDataErr))
    }
    return .success(password)
}

/// One line typed on the terminal (standard input) without echo.
func readTerminalLine(_ prompt: String, max: Int) -> Result<[UInt8], Exit> {
    var buffer = [CChar](repeating: 0, count: max)
    var count = 0
    let rc = cl_read_password_tty(0, prompt, &buffer, buffer.count, &count)
    defer { for i in buffer.indices { buffer[i] = 0 } }
    switch rc {
    case 0:
        return .success(buffer.prefix(min(count, max)).map { UInt8(bitPattern: $0) })
    case 1:
        Sys.writeStderr("postern passwd: the password is longer than \(max) octets; nothing was changed\n")
        return .failure(Exit(code: exDataErr))
    default:
        Sys.writeStderr("postern passwd: cannot read the password: \(Errno.current("read").text)\n")
        return .failure(Exit(code: exIOErr))
    }
}

/// The `[receiver] auth_users` of the configuration at `path`: nil when the
/// file does not exist or sets none; a relative path is resolved against
/// the file's directory, as the configuration's own paths are.
///
/// A small reader of its own, not `ConfigFile.load`: `passwd` must work on
/// a configuration the daemon would refuse for an unrelated reason (a user
/// is often added while the rest is still being written). It reads
/// `[section]` headers, `key = value` lines and `#` comments as the parser
/// does.
func authUsersSetting(_ path: String) -> Result<String?, UsageError> {
    let text: [UInt8]
    switch Sys.readFile(path) {
    case .success(let b): text = b
    case .failure(let e) where e.code == ENOENT: return .success(nil)
    case .failure(let e): return .failure(UsageError(message: "cannot read \(path): \(e.text)"))
    }
    var section: [UInt8] = []
    var value: [UInt8]? = nil
    for raw in text.split(separator: ASCII.lf, omittingEmptySubsequences: false) {
        var line = raw
        if line.last == ASCII.cr { line = line.dropLast() }
        // A comment is a whole line beginning with '#', or a '#' after a blank.
        var cut = line.endIndex
        var i = line.startIndex
        while i < line.endIndex {
            if line[i] == ASCII.hash && (i == line.startIndex || ASCII.isSpace(line[i - 1])) {
                cut = i
                break
            }
            i += 1
        }
        let content = ASCII.trimmed(line[line.startIndex..<cut])
        if content.isEmpty { continue }
        if content.first == 91 /* [ */ && content.last == 93 /* ] */ {
            section = Array(ASCII.trimmed(content.dropFirst().dropLast()))
            continue
        }
        guard section.elementsEqual("receiver".utf8), let eq = content.firstIndex(of: ASCII.equals) else { continue }
        if ASCII.trimmed(content[content.startIndex..<eq]).elementsEqual("auth_users".utf8) {
            value = Array(ASCII.trimmed(content[content.index(after: eq)...]))
        }
    }
    guard let v = value, !v.isEmpty else { return .success(nil) }
    var result = ASCII.string(v)
    if v.first != 47 /* / */ {
        var base = "."
        if let slash = path.utf8.lastIndex(of: 47) {
            base = String(decoding: path.utf8[..<slash], as: UTF8.self)
            if base.isEmpty { base = "/" }
        }
        result = (base == "/" ? "" : base) + "/" + result
    }
    return .success(result)
}
