import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Supervisor mode: starts the app, gates readiness on it, restarts it when it dies, and stops
/// it last.
///
/// - Readiness: after each start the app is probed every 100 ms — `GET readiness.path` with a
///   `[readiness]` table, else a TCP connect — and requests are held (up to `readiness.hold`)
///   until it answers; when it exits they are held again at once.
/// - Restarts follow `[app] restart` with `RestartBackoff` delays.
/// - Stopping comes after the proxy's drain (the service group stops services in reverse):
///   SIGTERM to the app's process group, SIGKILL after `stop_timeout`.
/// - With `restart = "never"` (or `on-failure` and a clean exit) an exit of the app drains the
///   proxy, and the process exits with the app's code.
public final class AppSupervisor: Service, Sendable {
    private let app: AppConfig
    private let command: [String]
    private let target: UpstreamAddress
    private let readiness: ReadinessConfig?
    private let lifecycle: Lifecycle
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var child: ChildProcess?
        var stopping = false
    }

    /// - Parameters:
    ///   - command: the app's command, `{port}` already replaced.
    ///   - target: where the app listens, for the readiness probe.
    public init(app: AppConfig, command: [String], target: UpstreamAddress, readiness: ReadinessConfig?, lifecycle: Lifecycle, logger: Logger) {
        self.app = app
        self.command = command
        self.target = target
        self.readiness = readiness
        self.lifecycle = lifecycle
        self.logger = logger
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await self.supervise()
        } onGracefulShutdown: {
            self.stop()
        }
    }

    private var isStopping: Bool { self.state.withLockedValue { $0.stopping } }

    private func supervise() async throws {
        let address = try self.target.resolve()
        var backoff = RestartBackoff(base: self.app.restartBackoff)
        while !self.isStopping {
            let started = ContinuousClock.now
            let status: Int32
            do {
                let child = try ChildProcess(command: self.command)
                self.state.withLockedValue { $0.child = child }
                self.logger.notice("app started", metadata: ["pid": "\(child.pid)", "command": "\(self.command.joined(separator: " "))"])
                let becameReady = Task { await self.waitUntilReady(address, child: child) }
                status = await child.waitForExit()
                becameReady.cancel()
                self.state.withLockedValue { $0.child = nil }
            } catch {
                self.logger.error("app failed to start", metadata: ["error": "\(error)"])
                status = 127
            }
            self.lifecycle.setAppReady(false)
            self.lifecycle.metrics.appExits.increment()
            if self.isStopping {
                self.logger.notice("app stopped", metadata: ["status": "\(status)"])
                return
            }
            self.logger.warning("app exited", metadata: ["status": "\(status)"])
            switch self.app.restart {
            case .never, .onFailure where status == 0:
                // Nothing left to serve: drain, then exit with the app's code.
                self.lifecycle.setAppExitCode(status)
                self.lifecycle.requestDrain()
                try? await gracefulShutdown()
                return
            case .always, .onFailure:
                let delay = backoff.delay(afterRunOf: ContinuousClock.now - started)
                self.logger.notice("restarting app", metadata: ["in": "\(delay)"])
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// Probes the fresh app until it answers, then lets the held requests go.
    private func waitUntilReady(_ address: SocketAddress, child: ChildProcess) async {
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        while !Task.isCancelled {
            let healthy: Bool
            if let readiness = self.readiness {
                healthy = await HealthProbe.check(target: address, path: readiness.path, timeout: readiness.timeout, eventLoop: eventLoop)
            } else {
                healthy = await HealthProbe.accepts(target: address, timeout: .seconds(1), eventLoop: eventLoop)
            }
            if healthy, !Task.isCancelled {
                self.lifecycle.setAppReady(true)
                self.logger.notice("app ready", metadata: ["pid": "\(child.pid)"])
                return
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// SIGTERM to the app's process group now, SIGKILL after `stop_timeout`.
    private func stop() {
        let child = self.state.withLockedValue { state -> ChildProcess? in
            state.stopping = true
            return state.child
        }
        guard let child else { return }
        self.logger.notice("stopping app", metadata: ["pid": "\(child.pid)", "timeout": "\(self.app.stopTimeout)"])
        child.signalGroup(SIGTERM)
        let stopTimeout = self.app.stopTimeout
        Task {
            try? await Task.sleep(for: stopTimeout)
            if self.state.withLockedValue({ $0.child === child }) {
                self.logger.warning("app did not stop in time; killing it", metadata: ["pid": "\(child.pid)"])
                child.signalGroup(SIGKILL)
            }
        }
    }
}
