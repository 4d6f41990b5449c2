// swift-tools-version: 6.0
// The regular (development) build of Postern. The release build compiles the same
// daemon sources as Embedded Swift; see the Makefile's `build` target.
import PackageDescription

let package = Package(
    name: "postern",
    targets: [
        // libc headers and the small C helpers Swift cannot express (errno, macros).
        .target(name: "CLibc", path: "Sources/CLibc",
                linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto"), .linkedLibrary("crypt")]),
        // libsystemd: sd_notify, the watchdog, listen fds, sd_journal_sendv.
        .systemLibrary(name: "CSystemd", path: "Sources/CSystemd"),
        // Pure protocol cores: no syscalls, no clock, no logging.
        .target(name: "PosternCore", path: "Sources/PosternCore"),
        // The poll loop, sockets, spool files, signals and the daemon's wiring.
        .target(name: "PosternRuntime", dependencies: ["PosternCore", "CLibc", "CSystemd"],
                path: "Sources/PosternRuntime"),
        .executableTarget(name: "postern", dependencies: ["PosternRuntime", "PosternCore", "CLibc"],
                          path: "Sources/postern",
                          linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto"),
                                           .linkedLibrary("crypt"), .linkedLibrary("systemd")]),
        .testTarget(name: "PosternCoreTests", dependencies: ["PosternCore"],
                    path: "Tests/PosternCoreTests"),
        .testTarget(name: "PosternRuntimeTests", dependencies: ["PosternRuntime", "PosternCore", "CLibc"],
                    path: "Tests/PosternRuntimeTests"),
    ]
)
