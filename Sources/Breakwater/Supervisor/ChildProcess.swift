import Atomics
import CBreakwaterSpawn
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOConcurrencyHelpers
import NIOPosix

/// One run of the app as a child process.
///
/// - It leads a process group of its own, so a stop signal reaches whatever it forked too
///   (uvicorn's workers, a shell's children).
/// - On Linux it is started through `setpriv --pdeathsig KILL` when that exists (util-linux,
///   in every Debian image), so it dies with Breakwater even when Breakwater is killed with
///   SIGKILL and cannot clean up: no orphans. The parent-death signal fires when the *thread*
///   that spawned the child ends, so spawning happens on a thread that lives as long as the
///   process (`NIOThreadPool.singleton`'s), never on one the concurrency runtime may retire.
/// - It inherits Breakwater's stdout and stderr, so its output is forwarded as it is written,
///   without a copy through Breakwater; and no other descriptor. SwiftNIO opens its sockets
///   without close-on-exec, so a child would otherwise hold copies of the listeners and of
///   every open connection: a listener the drain closed would still take connections nobody
///   answers, and a connection the proxy closed would send the client no FIN.
/// - Its exit is awaited on a thread of its own (`waitpid` blocks), never on an event loop, and
///   reaped there, so it never lingers as a zombie.
final class ChildProcess: Sendable {
    let pid: pid_t
    private let exit: Task<Int32, Never>
    /// Set by the waiting thread the moment `waitpid` returns, before the exit status reaches
    /// whoever awaits it through the concurrency runtime.
    private let exited = ManagedAtomic(false)

    struct SpawnError: Error, CustomStringConvertible {
        var command: [String]
        var code: Int32
        var description: String { "cannot start \(self.command.joined(separator: " ")): \(String(cString: strerror(self.code)))" }
    }

    /// Starts `command` (searched in PATH) with `environment` added to Breakwater's own; with
    /// `discardingOutput`, its stdout and stderr go to /dev/null instead.
    static func spawn(command: [String], environment: [String: String] = [:], discardingOutput: Bool = false) async throws -> ChildProcess {
        try await NIOThreadPool.singleton.runIfActive {
            try ChildProcess(command: command, environment: environment, discardingOutput: discardingOutput)
        }
    }

    private init(command: [String], environment: [String: String], discardingOutput: Bool) throws {
        precondition(!command.isEmpty, "an empty command")
        let deathSignalWrapper = "/usr/bin/setpriv"
        let argv = FileManager.default.isExecutableFile(atPath: deathSignalWrapper)
            ? [deathSignalWrapper, "--pdeathsig", "KILL", "--"] + command
            : command

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setpgroup(&attributes, 0)
        // Breakwater traps these; the child starts with the default dispositions.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGUSR2, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0.key)=\($0.value)" }
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        // ENOSYS: a C library without the action (musl, Darwin), where the child inherits.
        let closing = c_breakwater_spawn_file_actions_addclosefrom(&fileActions, STDERR_FILENO + 1)
        guard closing == 0 || closing == ENOSYS else {
            throw SpawnError(command: command, code: closing)
        }
        if discardingOutput {
            posix_spawn_file_actions_addopen(&fileActions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_adddup2(&fileActions, STDOUT_FILENO, STDERR_FILENO)
        }
        var pid: pid_t = 0
        let code = Self.unreaped.withLockedValue { unreaped in
            let code = Self.withCStrings(argv) { arguments in
                Self.withCStrings(environment) { variables in
                    posix_spawnp(&pid, argv[0], &fileActions, &attributes, arguments, variables)
                }
            }
            if code == 0 {
                unreaped.insert(pid)
            }
            return code
        }
        guard code == 0 else {
            throw SpawnError(command: command, code: code)
        }
        self.pid = pid
        let (child, exited) = (pid, self.exited)
        self.exit = Task.detached {
            await withCheckedContinuation { continuation in
                let thread = Thread {
                    var status: Int32 = 0
                    while waitpid(child, &status, 0) == -1 && errno == EINTR {}
                    exited.store(true, ordering: .releasing)
                    Self.unreaped.withLockedValue { _ = $0.remove(child) }
                    continuation.resume(returning: status)
                }
                thread.name = "breakwater-wait-\(child)"
                thread.start()
            }
        }
    }

    /// The exit status once the process ended: its exit code, or 128 + the signal that killed it.
    func waitForExit() async -> Int32 {
        let status = await self.exit.value
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    /// Whether the process has ended, known as soon as it is reaped: a task that awaits
    /// `waitForExit` learns it later, when the runtime gets round to resuming it.
    var hasExited: Bool {
        self.exited.load(ordering: .acquiring)
    }

    /// Sends `signal` to the child's whole process group.
    func signalGroup(_ signal: Int32) {
        kill(-self.pid, signal)
    }

    /// Whether a process of the child's group is still running: the app's own workers, or what
    /// it ran in the background. Those left to this process — orphans come to PID 1, which
    /// Breakwater is in a container started without an init — are reaped on the way, or they
    /// would count as running forever.
    var groupIsRunning: Bool {
        while waitpid(-self.pid, nil, WNOHANG) > 0 {}
        return kill(-self.pid, 0) == 0
    }

    /// Children spawned here and not yet reaped by their waiters: `reapOrphans` leaves them to
    /// those, which would otherwise lose the exit status. Spawning and reaping take the lock,
    /// so a child is in the set before it can be seen as one.
    private static let unreaped = NIOLockedValueBox<Set<pid_t>>([])

    /// Reaps this process's children that it did not spawn and that have exited.
    ///
    /// As PID 1 (a container started without an init), every process orphaned in the
    /// container comes to Breakwater: a daemon the app double-forked, the job of a shell that
    /// exited. Each that ends stays a zombie until its parent reaps it, and in numbers they
    /// exhaust the PID limit. A waiter on any child would take the app's exit status from its
    /// own waiter, so the children are taken one by one from /proc, and only the unknown ones
    /// reaped. Blocking (it reads /proc): never on an event loop.
    ///
    /// - Returns: false when the children cannot be listed (a kernel without
    ///   `CONFIG_PROC_CHILDREN`).
    static func reapOrphans() -> Bool {
        guard let children = Self.children(of: "self") else { return false }
        Self.unreaped.withLockedValue { unreaped in
            for child in children where !unreaped.contains(child) {
                while waitpid(child, nil, WNOHANG) == -1 && errno == EINTR {}
            }
        }
        return true
    }

    /// The children of `process` (`self`, or a pid), over all its threads: a child belongs to
    /// the thread that started it, and orphans come to the main thread. Nil when /proc cannot
    /// list them (a kernel without `CONFIG_PROC_CHILDREN`).
    static func children(of process: String) -> [pid_t]? {
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process)/task")) ?? []
        let lists = threads.compactMap { try? String(contentsOfFile: "/proc/\(process)/task/\($0)/children", encoding: .utf8) }
        guard !lists.isEmpty else { return nil }
        return lists.flatMap { $0.split(separator: " ").compactMap { pid_t($0) } }
    }

    private static func withCStrings<Result>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> Result) -> Result {
        var pointers = strings.map { strdup($0) }
        pointers.append(nil)
        defer { pointers.forEach { free($0) } }
        return body(pointers)
    }
}
