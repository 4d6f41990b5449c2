import CLibc

// A `main` that runs files through `fuzzOne` without libFuzzer: the Embedded
// build of each target (Tests/fuzz/README.md) replays the corpus with it, so the
// release build's code meets every input the fuzzer kept. Arguments are files or
// directories (every file in them, not recursively); `-v` names each file before
// it runs, to find the one that traps. Exit status 0 means every input ran.

@_cdecl("main")
func replayMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    var verbose = false
    var paths: [String] = []
    for i in 1..<Int(max(argc, 1)) {
        guard let p = argv[i] else { continue }
        let arg = String(cString: p)
        if arg == "-v" { verbose = true } else { paths.append(arg) }
    }
    var count = 0
    for path in paths {
        for file in replayFiles(path) {
            if verbose { say("replay: " + file) }
            guard let bytes = replayRead(file) else {
                say("replay: cannot read " + file)
                return 1
            }
            bytes.withUnsafeBytes { fuzzOne($0) }
            count += 1
        }
    }
    say("replay: \(count) inputs ran")
    return 0
}

/// One line on stderr, unbuffered, so the last one before a trap is seen.
func say(_ line: String) {
    fputs(line + "\n", stderr)
}

/// The regular files directly in `path`, sorted, or `path` itself if it is no directory.
func replayFiles(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [path] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = String(cString: cl_dirent_name(entry))
        if !name.hasPrefix(".") { names.append(path + "/" + name) }
    }
    return names.sorted()
}

func replayRead(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n == 0 { break }
        out += chunk[0..<n]
    }
    return ferror(f) == 0 ? out : nil
}
