@testable import Breakwater
import Testing

/// What a reload applies and what it keeps for a restart (`ProxyConfig+Reload`).
@Suite struct ReloadTests {
    private static func parse(_ text: String) throws -> ProxyConfig {
        try ConfigLoader.parse("upstream = \"127.0.0.1:8000\"\n" + text, fileName: "test.conf")
    }

    @Test func whatOnlyARestartChangesIsKeptAndNamed() throws {
        let running = try Self.parse(
            """
            listen = "0.0.0.0:8080"
            [server]
            max_body_bytes = "1MB"
            [log]
            level = "info"
            [readiness]
            path = "/health"
            hold = "10s"
            [drain]
            timeout = "20s"
            [concurrency]
            soft_limit = 10
            hard_limit = 20
            """
        )
        let file = try Self.parse(
            """
            listen = "0.0.0.0:9090"
            [server]
            max_body_bytes = "2MB"
            [log]
            level = "debug"
            [readiness]
            path = "/ready"
            hold = "3s"
            public_path = "/up"
            [drain]
            timeout = "5s"
            [concurrency]
            soft_limit = 30
            hard_limit = 40
            """
        )
        let applied = running.reloaded(with: file)
        // Kept as they run:
        #expect(applied.listen == running.listen)
        #expect(applied.server == running.server)
        #expect(applied.log.level == .info)
        #expect(applied.readiness?.path == "/health")
        // Applied:
        #expect(applied.readiness?.hold == .seconds(3))
        #expect(applied.readiness?.publicPath == "/up")
        #expect(applied.drain.timeout == .seconds(5))
        #expect(applied.concurrency == file.concurrency)
        #expect(running.keysNeedingRestart(toApply: file) == ["listen", "server", "log.level", "readiness"])
    }

    @Test func aFileThatChangesOnlyWhatReloadsNeedsNoRestart() throws {
        let running = try Self.parse("[readiness]\nhold = \"10s\"\n")
        let file = try Self.parse("[readiness]\nhold = \"2s\"\npublic_path = \"/up\"\n[drain]\ntimeout = \"1s\"\n")
        #expect(running.keysNeedingRestart(toApply: file) == [])
        // Applied once, the same file again is no change at all.
        #expect(running.reloaded(with: file).keysNeedingRestart(toApply: file) == [])
    }

    @Test func addingOrRemovingTheReadinessTableTakesARestart() throws {
        let without = try Self.parse("")
        let with = try Self.parse("[readiness]\n")
        #expect(without.keysNeedingRestart(toApply: with) == ["readiness"])
        #expect(without.reloaded(with: with).readiness == nil)
        #expect(with.keysNeedingRestart(toApply: without) == ["readiness"])
        #expect(with.reloaded(with: without).readiness == with.readiness)
    }
}
