import PosternCore

/// Reads and parses a configuration file (at start and on SIGHUP).
public enum ConfigFile {
    public static func load(_ path: String) -> Result<Config, ConfigError> {
        let bytes: [UInt8]
        switch Sys.readFile(path) {
        case .success(let b): bytes = b
        case .failure(let e):
            return .failure(ConfigError(file: path, line: 0, message: "cannot read: \(e.text)"))
        }
        // Relative paths in the file are relative to its directory.
        var base = "."
        if let slash = path.utf8.lastIndex(of: 47) {
            base = String(decoding: path.utf8[..<slash], as: UTF8.self)
            if base.isEmpty { base = "/" }
        }
        return ConfigParser(file: path, baseDirectory: base, systemHostname: Sys.hostname()).parse(bytes)
    }
}
