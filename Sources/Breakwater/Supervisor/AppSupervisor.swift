import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Supervisor mode: runs the app's workers, gates readiness on them, restarts them when they
/// die, rolls them one at a time on request, and stops them last.
///
/// - Readiness: a worker out of the balance — just started, or taken out after a failed
///   connect — is probed every 100 ms (`GET readiness.path` with a `[readiness]` table, else a
///   TCP connect) and joins when it answers; with the table, one in the balance is probed every
///   `interval` and leaves it when its health check fails. While no worker is ready, requests
///   are held (up to `readiness.hold`); when one dies it leaves the balance at once and the
///   others take its share.
/// - Restarts follow `[app] restart` with `RestartBackoff` delays.
/// - A rolling restart (SIGUSR2, `POST /admin/restart-app`) takes each worker out of the
///   balance, waits for its requests to finish, restarts it and waits until it is ready before
///   the next: a deploy inside the Machine drops nothing.
/// - Stopping comes after the proxy's drain (the service group stops services in reverse):
///   SIGTERM to each worker's process group, SIGKILL after `stop_timeout`.
/// - With `restart = "never"` (or `on-failure` and a clean exit) an exit of the app drains the
///   proxy, and the process exits with the app's code.
public final class AppSupervisor: Service, Sendable {
    private let app: AppConfig
    /// Per worker, `{port}` already replaced.
    private let commands: [[String]]
    private let upstreams: UpstreamSet
    private let readiness: ReadinessConfig?
    private let lifecycle: Lifecycle
    private let logger: Logger
    private let state: NIOLockedValueBox<State>

    private struct State {
        var children: [ChildProcess?]
        /// Workers whose main process exited and whose process group is being stopped
        /// (`stopWhatIsLeft`): a second stop signal must reach those groups too.
        var settling: [Int: ChildProcess] = [:]
        /// The processes a rolling restart stopped: their exit is planned, not a crash. Kept
        /// by process, not by worker, so that a crash of the one before cannot pass for it.
        var plannedExits: Set<ObjectIdentifier> = []
        /// Workers a rolling restart keeps out of the balance until their replacement answers.
        var heldOut: Set<Int> = []
        var rolling = false
        var stopping = false
    }

    public init(app: AppConfig, commands: [[String]], upstreams: UpstreamSet, readiness: ReadinessConfig?, lifecycle: Lifecycle, logger: Logger) {
        precondition(commands.count == upstreams.members.count, "one command per worker")
        self.app = app
        self.commands = commands
        self.upstreams = upstreams
        self.readiness = readiness
        self.lifecycle = lifecycle
        self.logger = logger
        self.state = NIOLockedValueBox(State(children: Array(repeating: nil, count: commands.count)))
    }

    /// Stops the app on a drain, and also when the service group is torn down (another
    /// service failed: a port already taken, say): the app must not outlive a proxy that
    /// will never serve it.
    public func run() async throws {
        let reaper = Task { await self.reapOrphansWhileInit() }
        defer { reaper.cancel() }
        await withTaskCancellationOrGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                for member in self.upstreams.members {
                    group.addTask { await self.supervise(member) }
                }
            }
            // Workers that ended for good asked for a drain; returning before it came would
            // end the service group without one.
            try? await gracefulShutdown()
        } onCancelOrGracefulShutdown: {
            self.stop()
        }
    }

    private var isStopping: Bool { self.state.withLockedValue { $0.stopping } }

    /// As PID 1, reaps the orphans the app leaves (`ChildProcess.reapOrphans`) every second.
    private func reapOrphansWhileInit() async {
        guard getpid() == 1 else { return }
        while !Task.isCancelled {
            let listed = (try? await NIOThreadPool.singleton.runIfActive { ChildProcess.reapOrphans() }) ?? true
            if !listed {
                self.logger.warning("as PID 1, cannot list child processes (no /proc/PID/task/TID/children): what the app orphans stays a zombie")
                return
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    private func supervise(_ worker: UpstreamSet.Member) async {
        var backoff = RestartBackoff(base: self.app.restartBackoff)
        let command = self.commands[worker.index]
        var logger = self.logger
        logger[metadataKey: "worker"] = "\(worker.index)"
        while !self.isStopping {
            let started = ContinuousClock.now
            let status: Int32
            var planned = false
            do {
                let child = try await ChildProcess.spawn(command: command, environment: Self.environment(of: worker))
                let stopping = self.state.withLockedValue { state in
                    state.children[worker.index] = child
                    return state.stopping
                }
                if stopping {
                    // The stop came while it was starting, and could not see it to stop it.
                    self.terminate(child)
                }
                logger.notice("app started", metadata: ["pid": "\(child.pid)", "command": "\(command.joined(separator: " "))"])
                let balance = Task { await self.keepInBalance(worker, child: child, logger: logger) }
                status = await child.waitForExit()
                balance.cancel()
                planned = self.state.withLockedValue { state in
                    // Out of the balance in the same step as it stops being the live process,
                    // so that its prober cannot put it back in between.
                    state.children[worker.index] = nil
                    state.settling[worker.index] = child
                    self.lifecycle.setInstance(worker, of: self.upstreams, ready: false)
                    guard state.plannedExits.remove(ObjectIdentifier(child)) != nil else { return false }
                    state.heldOut.remove(worker.index)  // its replacement joins once it answers
                    return true
                }
                await self.stopWhatIsLeft(of: child, logger: logger)
                self.state.withLockedValue { _ = $0.settling.removeValue(forKey: worker.index) }
            } catch {
                logger.error("app failed to start", metadata: ["error": "\(error)"])
                status = 127
                self.lifecycle.setInstance(worker, of: self.upstreams, ready: false)
            }
            self.lifecycle.metrics.appExits.increment()
            if self.isStopping {
                logger.notice("app stopped", metadata: ["status": "\(status)"])
                return
            }
            if planned {
                logger.notice("app restarted on request", metadata: ["status": "\(status)"])
                continue
            }
            logger.warning("app exited", metadata: ["status": "\(status)"])
            switch self.app.restart {
            case .never,
                .onFailure where status == 0:
                // Nothing left to serve: drain, then exit with the app's code.
                self.lifecycle.setAppExitCode(status)
                self.lifecycle.requestDrain()
                return
            case .always, .onFailure:
                let delay = backoff.delay(afterRunOf: ContinuousClock.now - started)
                logger.notice("restarting app", metadata: ["in": "\(delay)"])
                // Cut short by a stop: the backoff (up to 30 s) must not hold up the exit.
                let restartAt = ContinuousClock.now + delay
                while !self.isStopping && ContinuousClock.now < restartAt {
                    try? await Task.sleep(for: min(.milliseconds(100), restartAt - ContinuousClock.now))
                }
            }
        }
    }

    /// Keeps a running worker's place in the balance right, by `[readiness]`'s thresholds
    /// (one probe each way without the table).
    ///
    /// - Out of the balance, it is probed every 100 ms and joins once healthy. That covers a
    ///   worker taken out by the data path (a connect to it failed): one missed connect under a
    ///   burst must not cost the balance a worker until its process dies.
    /// - In the balance, with `[readiness]`, it is probed every `interval`, as an app without a
    ///   supervisor is, and leaves once unhealthy: a worker whose process lives but whose health
    ///   check fails (its database gone, its loop wedged) gets no requests, and the others take
    ///   them. Without the table a TCP connect would say nothing the data path's connects do not.
    /// - A worker a rolling restart holds out is left out.
    private func keepInBalance(_ worker: UpstreamSet.Member, child: ChildProcess, logger: Logger) async {
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        func freshTracker() -> ReadinessTracker {
            ReadinessTracker(healthyThreshold: self.readiness?.healthyThreshold ?? 1, unhealthyThreshold: self.readiness?.unhealthyThreshold ?? 1)
        }
        var tracker = freshTracker()
        var joinedBefore = false
        var statusLogged: Int?
        while !Task.isCancelled {
            if tracker.isReady && !worker.isReady {
                // Taken out meanwhile (a failed connect, a rolling restart): healthy again first.
                tracker = freshTracker()
            }
            if (!tracker.isReady || self.readiness != nil) && !self.isHeldOut(worker) {
                let healthy: Bool
                if let readiness = self.readiness {
                    let verdict = await HealthProbe.check(target: worker.target, path: readiness.path, timeout: readiness.timeout, eventLoop: eventLoop)
                    HealthProbe.log(verdict, path: readiness.path, lastLogged: &statusLogged, logger: logger)
                    healthy = verdict.isHealthy
                } else {
                    healthy = await HealthProbe.accepts(target: worker.target, timeout: .seconds(1), eventLoop: eventLoop)
                }
                if let ready = tracker.record(healthy: healthy) {
                    // Joins or leaves only if, at this instant, it is still the live process and
                    // not held out (a failed join is retried from scratch, above).
                    let changed = self.state.withLockedValue { state in
                        guard !Task.isCancelled, state.children[worker.index] === child, !state.heldOut.contains(worker.index),
                            worker.isReady != ready
                        else { return false }
                        self.lifecycle.setInstance(worker, of: self.upstreams, ready: ready)
                        return true
                    }
                    if changed && ready {
                        logger.notice(joinedBefore ? "app back in the balance" : "app ready", metadata: ["pid": "\(child.pid)"])
                        joinedBefore = true
                    } else if changed {
                        logger.warning("app not ready", metadata: ["pid": "\(child.pid)", "probe": "GET \(self.readiness?.path ?? "")"])
                    }
                }
            }
            // In the balance, the next probe is `interval` away, unless the data path takes the
            // worker out meanwhile (a failed connect): then within 100 ms, as any worker out.
            let wait = tracker.isReady ? self.readiness?.interval ?? .milliseconds(100) : .milliseconds(100)
            let probeAt = ContinuousClock.now + wait
            repeat {
                try? await Task.sleep(for: min(.milliseconds(100), probeAt - ContinuousClock.now))
            } while ContinuousClock.now < probeAt && !Task.isCancelled && worker.isReady
        }
    }

    /// A rolling restart has taken the worker out of the balance on purpose.
    private func isHeldOut(_ worker: UpstreamSet.Member) -> Bool {
        self.state.withLockedValue { $0.heldOut.contains(worker.index) }
    }

    /// Starts a rolling restart (`rollWorkers`), unless one is under way or the app is
    /// stopping: then false, for SIGUSR2's log and the admin endpoint's 409.
    public func startRollingRestart() -> Bool {
        let refusal: Logger.Message? = self.state.withLockedValue { state in
            if state.stopping { return "no rolling restart: the app is stopping" }
            if state.rolling { return "rolling restart already under way" }
            state.rolling = true
            return nil
        }
        if let refusal {
            self.logger.notice(refusal)
            return false
        }
        Task { await self.rollWorkers() }
        return true
    }

    /// Restarts the workers one at a time, each out of the balance and idle before it stops,
    /// and back in it before the next one goes.
    private func rollWorkers() async {
        defer { self.state.withLockedValue { $0.rolling = false } }
        self.logger.notice("rolling restart", metadata: ["workers": "\(self.upstreams.members.count)"])
        for worker in self.upstreams.members {
            guard !self.isStopping else { return }
            // Another worker in the balance first, when there is another (one crashed before
            // the roll or meanwhile may be in its backoff): taking this one out would leave none.
            let othersServe = await self.waitDuringRoll {
                self.upstreams.members.count == 1 || self.upstreams.members.contains { $0 !== worker && $0.isReady }
            }
            guard othersServe else {
                self.logStop(of: worker, "rolling restart stopped: no other worker is in the balance")
                return
            }
            // Held out, so that nothing puts it back while its requests finish.
            let serving = self.state.withLockedValue { state in
                state.heldOut.insert(worker.index)
                self.lifecycle.setInstance(worker, of: self.upstreams, ready: false)
                return state.children[worker.index]
            }
            let deadline = ContinuousClock.now + self.app.stopTimeout
            while worker.requestsInProgress > 0 && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
            // The process that was serving is the one to stop. One that crashed meanwhile is
            // handled as a crash (its backoff, its restart rule); it is between runs or its
            // replacement already runs, fresh anyway, and the roll only waits for it to be back.
            // (`serving` is held, so a replacement cannot take its identity.) A crash can end its
            // requests, and so this wait, before the task that awaits its exit has run: its
            // reaping, not its place in `children`, tells that it is gone.
            let child = self.state.withLockedValue { state -> ChildProcess? in
                guard let child = state.children[worker.index], child === serving, !child.hasExited else {
                    state.heldOut.remove(worker.index)
                    return nil
                }
                state.plannedExits.insert(ObjectIdentifier(child))
                return child
            }
            if let child {
                self.terminate(child)
            }
            // Back in the balance before the next one leaves it, however it left: taking the
            // next one out first could leave no worker serving. A replacement that does not
            // come back (new code that fails its health check, or crashes at start) stops the
            // roll, with the other workers still serving, rather than hold it — and every
            // later one — forever.
            guard await self.waitDuringRoll({ worker.isReady && !self.isHeldOut(worker) }) else {
                self.logStop(of: worker, "rolling restart stopped: the worker is not back in the balance")
                return
            }
        }
        self.logger.notice("rolling restart done")
    }

    /// Polls until `condition` holds, for as long as a rolling restart waits for a worker to be
    /// in the balance: its stop, then as long as a request would wait for a ready app
    /// (`readiness.hold`). False when that ran out, or the app is stopping.
    private func waitDuringRoll(_ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + self.app.stopTimeout + (self.readiness ?? ReadinessConfig()).hold
        while !condition() {
            guard !self.isStopping, ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return true
    }

    /// A roll's wait ran out (`waitDuringRoll`); one cut short by a stop says nothing.
    private func logStop(of worker: UpstreamSet.Member, _ message: Logger.Message) {
        guard !self.isStopping else { return }
        self.logger.warning(message, metadata: ["worker": "\(worker.index)"])
    }

    /// `PORT`, set to where the worker must listen, for apps that read their port from the
    /// environment (the Heroku and Cloud Run convention) rather than from `{port}`.
    private static func environment(of worker: UpstreamSet.Member) -> [String: String] {
        guard case .tcp(let address) = worker.address else { return [:] }
        return ["PORT": String(address.port)]
    }

    /// The app's process has exited; whatever else is left of its group (a uvicorn or gunicorn
    /// master's workers when the OOM killer took the master, a `sh -c` script's background
    /// job) would keep its port and make every restart fail. Those get SIGTERM and
    /// `stop_timeout` to finish, then SIGKILL, as systemd ends a service's control group.
    private func stopWhatIsLeft(of child: ChildProcess, logger: Logger) async {
        guard child.groupIsRunning else { return }
        logger.notice("stopping what is left of the app's process group", metadata: ["pgid": "\(child.pid)"])
        child.signalGroup(SIGTERM)
        let deadline = ContinuousClock.now + self.app.stopTimeout
        while child.groupIsRunning && ContinuousClock.now < deadline {
            // Not cut short by cancellation (the service group torn down): that would spin.
            await Task.detached { try? await Task.sleep(for: .milliseconds(20)) }.value
        }
        if child.groupIsRunning {
            logger.warning("the app's process group did not stop in time; killing it", metadata: ["pgid": "\(child.pid)"])
            child.signalGroup(SIGKILL)
        }
    }

    /// SIGTERM to every worker's process group now, SIGKILL after `stop_timeout`.
    private func stop() {
        let children = self.state.withLockedValue { state -> [ChildProcess] in
            state.stopping = true
            return state.children.compactMap { $0 }
        }
        for child in children {
            self.logger.notice("stopping app", metadata: ["pid": "\(child.pid)", "timeout": "\(self.app.stopTimeout)"])
            self.terminate(child)
        }
    }

    /// SIGKILL to every worker's process group at once, for an exit that cannot wait (a second
    /// stop signal): `--pdeathsig` reaches only each group's leader when Breakwater exits, not
    /// the workers a uvicorn or gunicorn master forked, which would keep the app's port.
    public func killAll() {
        let groups = self.state.withLockedValue { state -> [ChildProcess] in
            state.stopping = true
            return state.children.compactMap { $0 } + state.settling.values
        }
        for group in groups {
            group.signalGroup(SIGKILL)
        }
    }

    private func terminate(_ child: ChildProcess) {
        child.signalGroup(SIGTERM)
        let stopTimeout = self.app.stopTimeout
        Task {
            try? await Task.sleep(for: stopTimeout)
            if self.state.withLockedValue({ state in state.children.contains { $0 === child } }) {
                self.logger.warning("app did not stop in time; killing it", metadata: ["pid": "\(child.pid)"])
                child.signalGroup(SIGKILL)
            }
        }
    }
}
