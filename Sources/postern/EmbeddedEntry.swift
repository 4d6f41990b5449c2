// The entry point of the Embedded release build, which has no `CommandLine`:
// export C's `main` and hand argc/argv on. Empty in the regular build, where
// main.swift is the entry point instead.
#if hasFeature(Embedded)
@_cdecl("main")
func cMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    installCRCAcceleration()
    return posternMain(argc, argv)
}
#endif
