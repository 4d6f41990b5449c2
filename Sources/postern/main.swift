// The entry point of the regular (development) build. The Embedded release build
// has no `CommandLine`; it leaves this file out and uses EmbeddedEntry.swift.
import CLibc
import PosternRuntime

installCRCAcceleration()
exit(posternMain(CommandLine.argc, CommandLine.unsafeArgv))
