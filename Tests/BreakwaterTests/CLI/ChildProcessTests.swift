@testable import Breakwater
import Foundation
import Testing

/// A run of the app as `AppSupervisor` sees it (`ChildProcess`), without Breakwater around it.
@Suite struct ChildProcessTests {
    /// A rolling restart asks whether the process it is about to stop is still the one that
    /// runs (`hasExited`): a crash must not be taken for the planned stop because the task
    /// awaiting its exit has not run yet. The answer comes from the thread that reaps it, not
    /// from that task.
    @Test func aKilledChildIsKnownToHaveExitedWithoutAwaitingIt() async throws {
        let child = try await ChildProcess.spawn(command: ["sleep", "30"])
        #expect(!child.hasExited)
        child.signalGroup(SIGKILL)
        try await eventually(timeout: .seconds(10)) { child.hasExited }
        #expect(await child.waitForExit() == 128 + SIGKILL)
    }
}
