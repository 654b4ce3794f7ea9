import Atomics
import NIOCore
import NIOHTTP1

/// One request's journey through the proxy, top to bottom: route → drain gate → readiness
/// hold → admission (the proxy's limit, the route's bulkhead) → breaker → attempt (connect,
/// forward, timeout) → retry or answer → response.
///
/// Lives on the client connection's event loop, which is also where its upstream connections
/// live, so both sides are driven without locks; only the route's shared policy state (breaker,
/// retry budget) is reached through short locks. Bodies stream in both directions: the request
/// body goes to the app as it arrives (reads from the client pause while the app's socket is
/// full), and the response goes to the client as it arrives (reads from the app pause while the
/// client's socket is full). The steps' details live beside this file: admission in
/// `+Admission`, the client's side in `+Client`, the app's side and the deadlines in
/// `+Upstream`, the access log and metrics in `+Observability`.
final class ProxyExchange {
    enum Phase {
        /// No upstream connection yet: waiting for a slot, a connection, or a retry's backoff.
        /// Request body parts queue in `pendingBody`.
        case connecting
        /// The request is going to the app; no response head yet.
        case forwarding(UpstreamConnection)
        /// The response head went to the client; its body is streaming.
        case responding(UpstreamConnection)
        /// The app answered 101: the connection is about to become a tunnel.
        case upgrading(ProtocolSwitch)
        case finished
    }

    /// The `upgrading` phase's state, in a box of its own: every payload of `Phase` is then one
    /// reference, and the copy each switch over the phase makes is one retain, not a copy of a
    /// head and a buffer.
    final class ProtocolSwitch {
        let connection: UpstreamConnection
        /// The app's 101.
        let head: ResponseHead
        /// What the app sent behind the 101 before it closed, if it closed first.
        var said: ByteBuffer?

        init(connection: UpstreamConnection, head: ResponseHead) {
            self.connection = connection
            self.head = head
        }
    }

    /// Bodies up to this size are kept for replay (Linkerd's limit); larger ones are not retried.
    static let maxReplayBytes = 64 * 1024
    /// How long a response head may wait for the first piece of its body before it goes to the
    /// client alone (a stream that starts slowly).
    static let headHold = TimeAmount.milliseconds(50)

    let request: RequestHead
    // What the request's fields said (`MessageFields`, surveyed once on arrival).
    let requestFraming: MessageFraming
    let isUpgrade: Bool
    /// `MessageFields.isForwardable`: else the answer is 400.
    let isForwardable: Bool
    /// The client asked `Expect: 100-continue`: it may wait to be told to go on before it
    /// sends its body.
    let expectsContinue: Bool
    /// It was told (`100 Continue`). An HTTP/1.0 client never is: it would take a 1xx for the
    /// answer (RFC 9110 §15.2).
    var toldToContinue = false
    /// The client asked to be told to go on and has not been: it may be holding its body back.
    var mayAwaitContinue: Bool { self.expectsContinue && !self.toldToContinue }
    /// The client's `Connection` (or its version) lets the connection carry another request.
    let clientAsksKeepAlive: Bool
    /// The names the client's `Connection` listed, which are not forwarded.
    let nominatedByClient: [String]
    let clientAddress: String?
    let shared: ProxyShared
    let loop: EventLoopContext
    var eventLoop: any EventLoop { self.loop.eventLoop }
    let downstream: DownstreamHandler
    let route: Route
    let trace: RequestTrace
    let startedAt: NIODeadline

    var phase = Phase.connecting {
        didSet {
            switch self.phase {
            case .connecting, .finished: self.member = nil  // the attempt is over
            case .forwarding, .responding, .upgrading: break
            }
            // Every way out of an exchange ends here, once.
            guard case .finished = self.phase else { return }
            if case .finished = oldValue { return }
            self.leaveQueuesAndReleaseSlots()
        }
    }
    /// The instance of the app the current attempt went to; counted as outstanding there.
    var member: UpstreamSet.Member? {
        didSet {
            oldValue?.outstanding.wrappingDecrement(ordering: .relaxed)
            self.member?.outstanding.wrappingIncrement(ordering: .relaxed)
        }
    }
    /// The current instance's connection pool on this event loop.
    var pool: UpstreamConnectionPool {
        self.loop.pools[self.member?.index ?? 0]
    }

    /// The route's bulkhead and the proxy's limit, in the order a request takes their slots.
    var gates: [ConcurrencyGate] { self.route.gates }
    /// How many of `gates` this request holds a slot in.
    var slotsHeld = 0
    /// The request holds a place under the hard limits of the gates after the first, taken at
    /// admission; each is used up as the request asks that gate for its slot.
    var placesReserved = false
    /// How many of `gates` the request has asked for a slot (holds one, or queued at the last).
    var gatesAsked = 0
    /// The wait in a gate's queue, while queued: which gate, so that a slot handed over after
    /// the exchange ended (and gave back its other slots) goes back to the gate it came from.
    var queued: (gate: Int, ticket: UInt64)?
    /// The ticket of the wait for the app to become ready, while held, and what comes next.
    var readinessTicket: UInt64?
    var afterReadiness: ((ProxyExchange) -> Void)?
    /// Counted in the route's in-flight gauge: an attempt of it is at the app.
    var countedInFlight = false
    /// Counted and logged as a request once over: all but the proxy's own health check.
    var isRecorded = true

    // What the access log and the metrics say of the request once it is over.
    var answeredStatus = ProxyExchange.unanswered.status
    /// `ok` when the app answered; else the proxy's reason, `cut` or `client_closed`.
    var answerReason = ProxyExchange.unanswered.reason
    /// What a request no answer reached is logged and counted as: the client left.
    static let unanswered = (status: 499, reason: "client_closed")
    var bytesOut = 0
    var firstForwardedAt: NIODeadline?
    /// When the whole request first reached the app: the route's `timeout` runs from here,
    /// across every attempt.
    var requestSentAt: NIODeadline?
    var responseHeadAt: NIODeadline?
    /// An array, not a `CircularBuffer`: most requests never queue a part, and an empty array
    /// allocates nothing where a ring buffer allocates sixteen slots.
    var pendingBody: [ByteBuffer] = []
    var requestBodyBytes = 0
    /// The body so far while it fits `maxReplayBytes`, so a failed attempt can be sent again.
    var replayableBody: [ByteBuffer]? = []
    /// The client sent the whole request.
    var requestEnded = false

    /// Whether the client's next byte is known to start its next request: the request has
    /// ended, or has no body and so only its `.end` (no bytes on the wire) is still to come.
    var clientStreamPositionKnown: Bool {
        self.requestEnded || self.requestFraming == .noBody || self.requestFraming == .contentLength(0)
    }

    /// Whether the client's connection can carry its next request after an answer given now.
    /// A refusal — a shed, an open breaker — keeps the connection, which is what clients
    /// hammering an overloaded proxy need most; when the request's body is still to come, the
    /// connection first reads and drops the rest of it (`DownstreamHandler`), as nginx does, if
    /// that is little enough: a declared rest up to `maxDiscardedBodyBytes`, or a chunked one
    /// until it passes that. Not when the client waits for `100 Continue` before sending any:
    /// it may never send the body, and its next request would be read as that body.
    var clientConnectionOutlivesAnswer: Bool {
        if self.clientStreamPositionKnown { return true }
        if self.mayAwaitContinue && self.requestBodyBytes == 0 { return false }
        guard case .contentLength(let length) = self.requestFraming else { return true }  // chunked
        return length - self.requestBodyBytes <= DownstreamHandler.maxDiscardedBodyBytes
    }

    /// The whole request reached the current upstream connection: only then may it carry another.
    var requestForwarded = false
    var attempts = 0
    /// This attempt is a half-open breaker's probe, which must be reported or released.
    var probe: CircuitBreaker.Probe?
    var staleConnectionRetried = false
    /// The end of a wait without a connection: a queue timeout or a retry's backoff.
    var waitTimer: Scheduled<Void>?
    var responseFraming = MessageFraming.noBody
    /// The response head, kept back until the first piece of body arrives, and the breaker's
    /// verdict on it, which waits with it: an app that dies before the body failed, once.
    var heldHead: (head: EncodedHead, outcome: CircuitBreaker.Outcome)?
    var upstreamKeepAlive = false
    var clientKeepAlive = false

    init(
        request: RequestHead,
        clientAddress: String?,
        shared: ProxyShared,
        loop: EventLoopContext,
        downstream: DownstreamHandler
    ) {
        self.request = request
        let fields = MessageFields(request.headers, requestIDHeader: shared.trace.requestIDHeader)
        self.requestFraming = MessageFraming(request: fields)
        self.isUpgrade = fields.requestsUpgrade
        self.isForwardable = fields.isForwardable(version: request.version)
        self.expectsContinue = fields.expectsContinue
        self.clientAsksKeepAlive = fields.keepsAlive(version: request.version)
        self.nominatedByClient = fields.nominated
        self.clientAddress = clientAddress
        self.shared = shared
        self.loop = loop
        self.startedAt = loop.clock.now()
        self.downstream = downstream
        self.route = shared.route(method: request.method.rawValue, uri: request.uri)
        self.trace = RequestTrace(presented: fields, configuration: shared.trace, generator: &loop.identifiers)
        shared.lifecycle.requestsInFlight.wrappingIncrement(ordering: .relaxed)
    }

    /// The time of the event being handled, read once for all of it (`EventClock`).
    var now: NIODeadline { self.loop.clock.now() }

    var hasStartedResponse: Bool {
        switch self.phase {
        case .responding, .upgrading: true
        case .connecting, .forwarding, .finished: false
        }
    }

    /// Whether the client may send more request body now.
    var wantsClientReads: Bool {
        switch self.phase {
        case .forwarding(let connection), .responding(let connection): connection.isWritable
        case .connecting, .upgrading: false
        case .finished: true
        }
    }

    // MARK: The journey

    func start() {
        guard self.isForwardable else {
            self.respondLocally(.badRequest)
            return
        }
        guard self.request.method != .CONNECT else {
            // A reverse proxy has no tunnels to open, and a 2xx to CONNECT would leave the
            // client and the app disagreeing about where the HTTP stream ends (nginx: 400 too).
            self.respondLocally(.badRequest)
            return
        }
        if case .contentLength(let length) = self.requestFraming, length > self.shared.server.maxBodyBytes {
            self.respondLocally(.bodyTooLarge)
            return
        }
        if let path = self.shared.publicReadinessPath, Router.path(of: self.request.uri) == path {
            // `readiness.public_path`: for checks that can reach only the public port (Fly's).
            // Like `/health/ready` (and HAProxy's monitor-uri) not a request of the app's: its
            // 503 while the app starts must not read as the app's answer in the metrics.
            let ready = self.shared.lifecycle.currentPhase == .serving && self.shared.lifecycle.isAppReady
            self.isRecorded = false
            self.finishLocally(with: LocalResponse(status: ready ? .ok : .serviceUnavailable, json: #"{"ready":\#(ready)}"#))
            return
        }
        if self.shared.lifecycle.currentPhase == .stopping {
            // Arrived on a connection still open after the listener closed.
            self.respondLocally(.draining)
            return
        }
        self.route.recordRequest(now: PolicyInstant(self.now))
        self.waitForReadiness { $0.passGates() }
    }

    /// Asks the route's breaker; while it is open the client gets the route's fallback (or
    /// SPEC's 503) at once and nothing reaches the app.
    func admittedByBreaker() -> Bool {
        switch self.route.admit(now: PolicyInstant(self.now)) {
        case .admitted(let probe):
            self.probe = probe
            return true
        case .rejected(let retryAfter):
            let seconds = max(1, Int((Double(retryAfter.components.seconds) + Double(retryAfter.components.attoseconds) / 1e18).rounded(.up)))
            self.finishLocally(with: LocalResponse(.breakerOpen, retryAfterSeconds: seconds, fallback: self.route.policy.fallback))
            return false
        }
    }

    /// Leases a connection to the app and sends the request on it.
    ///
    /// - Parameter fresh: connect anew rather than take a parked connection.
    func attempt(onFreshConnection fresh: Bool = false) {
        self.attempts += 1
        self.requestForwarded = false
        let member = self.loop.upstreams.pick()
        self.member = member
        let pool = self.loop.pools[member.index]
        if !fresh, let connection = pool.takeIdle() {
            self.forward(on: connection, to: member)
            return
        }
        pool.connect { result in
            guard case .connecting = self.phase else {
                // The client left while we connected; the connection never carried anything.
                if case .success(let connection) = result {
                    pool.release(connection, reusable: true)
                }
                return
            }
            switch result {
            case .success(let connection):
                self.forward(on: connection, to: member)
            case .failure:
                if self.loop.upstreams.ejectsOnConnectFailure,
                    self.shared.lifecycle.setInstance(member, of: self.loop.upstreams, ready: false)
                {
                    // Out of the balance until its probe passes again; others take its share,
                    // and with none left, requests are held for the app as in a restart.
                    self.shared.lifecycle.metrics.workerEjected(member.index)
                    self.log(.warning, "app instance ejected after a failed connect", ["instance": "\(member.address)"])
                }
                self.attemptFailed(.connectFailure, on: nil)
            }
        }
    }

    private func forward(on connection: UpstreamConnection, to member: UpstreamSet.Member) {
        self.phase = .forwarding(connection)
        if !self.countedInFlight {
            self.countedInFlight = true
            self.route.metrics.inFlight.increment()
        }
        connection.delegate = self
        let head = HeaderRewriting.upstreamRequest(
            self.request,
            app: member.address,
            nominated: self.nominatedByClient,
            framing: self.requestFraming,
            clientAddress: self.clientAddress,
            isUpgrade: self.isUpgrade,
            trace: self.trace,
            traceConfiguration: self.shared.trace,
            allocator: self.loop.allocator
        )
        self.firstForwardedAt = self.firstForwardedAt ?? self.now
        connection.writeHead(head, method: self.request.method)
        let queued = self.pendingBody
        self.pendingBody = []
        for part in queued {
            connection.writeBody(part)
        }
        if self.requestEnded {
            self.finishRequest(on: connection)
        } else {
            self.resetDeadline(in: self.route.bodyTimeout)
        }
        connection.flush()
        if self.mayAwaitContinue {
            self.tellClientToContinue()
        }
        self.downstream.resumeReadingIfNeeded()
    }

    /// The app never sees `Expect` (it is answered here), so the client is told to go on — once
    /// the request is admitted and on its way, so that one refused first (shed, an open breaker,
    /// the app not ready) is answered before its body was sent for nothing.
    private func tellClientToContinue() {
        // Still on its way: a flush that failed at once can end the attempt inside `forward`
        // (answered, or waiting to retry), and a 100 behind a final answer would be read as the
        // start of the next.
        guard case .forwarding = self.phase, self.request.version.speaksChunked else { return }
        self.toldToContinue = true
        guard !self.requestEnded else { return }  // it did not wait
        let continueHead = EncodedHead(allocator: self.loop.allocator, expectedLength: 32) { out in
            out.statusLine(version: self.request.version, status: .continue)
            out.endHead()
        }
        self.downstream.writeResponsePart(.head(continueHead))
        self.downstream.flush()
    }

    func finishRequest(on connection: UpstreamConnection) {
        connection.writeEnd()
        self.requestForwarded = true
        if case .forwarding = self.phase {
            // The app has `timeout` from the end of the request to answer (Envoy's rule), so a
            // slow upload is not mistaken for a slow app; a retry gets what is left of it. An
            // attempt that a retry could follow if it timed out gets no more than its share.
            let now = self.now
            let sentAt = self.requestSentAt ?? now
            self.requestSentAt = sentAt
            let requestEnds = sentAt + self.route.timeout
            self.downstream.setExchangeDeadline(self.timeoutMayBeRetried ? min(now + self.route.attemptTimeout, requestEnds) : requestEnds)
        }
    }

    /// Whether a retry could follow the current attempt if it timed out: by the route's rules,
    /// and with the retry budget not spent as things stand (it is charged only at a retry).
    /// Routes that do not retry timeouts (the default) have no share, and ask nothing.
    private var timeoutMayBeRetried: Bool {
        self.route.attemptTimeout < self.route.timeout && self.route.retryPolicy.mayRetry(
            .timeout,
            attemptsMade: self.attempts,
            isIdempotent: self.request.method.isIdempotent,
            bodyReplayable: self.replayableBody != nil
        ) && self.route.hasRetryBudgetLeft(now: PolicyInstant(self.now))
    }

    // MARK: Outcomes

    /// Tells the breaker how the attempt went; a probe's slot is settled with it.
    func recordOutcome(_ outcome: CircuitBreaker.Outcome) {
        self.route.record(outcome, probe: self.probe, now: PolicyInstant(self.now))
        self.probe = nil
    }

    /// The current attempt is over: its connection, caught mid-exchange, closes rather than
    /// carry another request, its deadline is off, and the exchange waits for what comes next
    /// (another attempt, or its answer).
    func endAttempt(closing connection: UpstreamConnection?) {
        connection?.close()
        self.cancelDeadline()
        self.phase = .connecting
        self.leaveInFlight()
        // Its answer, if it had one, never reached the client: until another does, the
        // request is logged and counted as unanswered.
        (self.answeredStatus, self.answerReason) = Self.unanswered
        self.responseHeadAt = nil
    }

    /// Out of `breakwater_in_flight_requests`, which counts requests at the app now (SPEC):
    /// not those held for readiness, a slot or a retry's backoff.
    func leaveInFlight() {
        guard self.countedInFlight else { return }
        self.countedInFlight = false
        self.route.metrics.inFlight.decrement()
    }

    /// An attempt failed before a response head reached the client: retry it, or answer.
    func attemptFailed(_ failure: RetryPolicy.Failure, on connection: UpstreamConnection?) {
        self.endAttempt(closing: connection)
        self.recordOutcome(.failure)
        self.log(.debug, "attempt failed", ["failure": "\(failure)", "attempt": "\(self.attempts)"])
        if failure == .timeout {
            self.route.metrics.upstreamTimeouts.increment()
        }
        if let delay = self.retryDelay(after: failure) {
            self.retry(after: delay, failure: failure)
        } else {
            self.answer(failure)
        }
    }

    /// Sends the request again after `delay`, if the breaker still lets it through then. The
    /// failed attempt has ended (`endAttempt`).
    ///
    /// `breakwater_retries_total` counts the retry when it goes out, not when it is decided: a
    /// client that leaves during the wait, or a breaker that opens, makes none. The budget was
    /// charged at the decision, which errs towards fewer retries.
    func retry(after delay: Duration, failure: RetryPolicy.Failure) {
        self.log(.debug, "retrying", ["failure": "\(failure)", "delay": "\(delay)"])
        if failure != .connectFailure {
            // What went out must go out again; after a connect failure nothing did.
            self.pendingBody = self.replayableBody ?? []
        }
        self.waitTimer = self.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(delay)) {
            self.waitTimer = nil
            // The breaker may have opened meanwhile: then its answer is the client's. The app
            // may be restarting: then the retry waits for it, like a new request.
            guard case .connecting = self.phase, self.admittedByBreaker() else { return }
            self.waitForReadiness { exchange in
                exchange.route.metrics.retries.increment()
                exchange.attempt()
            }
        }
    }

    /// The wait before retrying after `failure`, if the route's rules and its retry budget
    /// allow one.
    func retryDelay(after failure: RetryPolicy.Failure) -> Duration? {
        let elapsed = self.requestSentAt.map { self.now - $0 } ?? .zero
        let delay = self.route.retryPolicy.delayBeforeRetry(
            after: failure,
            attemptsMade: self.attempts,
            isIdempotent: self.request.method.isIdempotent,
            bodyReplayable: self.replayableBody != nil,
            elapsed: .nanoseconds(elapsed.nanoseconds),
            random: Double.random(in: 0..<1)
        )
        guard let delay, self.route.tryAcquireRetry(now: PolicyInstant(self.now)) else { return nil }
        return delay
    }

    /// The answer for a failure that is not retried.
    private func answer(_ failure: RetryPolicy.Failure) {
        switch failure {
        case .connectFailure, .reset, .status, .malformedResponse: self.respondLocally(.upstreamUnavailable)
        case .timeout: self.respondLocally(.upstreamTimeout)
        }
    }

    /// Sends the request once more on a new connection, when the kept-alive one it went out on
    /// closed before a byte of an answer: the app's keep-alive timeout raced ours, and the
    /// request most likely never reached it. Only an idempotent request whose body is still
    /// held, and only once. Not the app's failure, so neither the breaker, nor the budget, nor
    /// the route's `attempts` hears of it; and not on another parked connection, which the same
    /// timeout may be closing too.
    ///
    /// - Returns: whether it was sent again; if not, the attempt failed.
    func resendOnFreshConnection(after connection: UpstreamConnection) -> Bool {
        guard connection.requestsServed > 0, !self.staleConnectionRetried, self.replayableBody != nil, self.request.method.isIdempotent else {
            return false
        }
        self.endAttempt(closing: connection)
        self.staleConnectionRetried = true
        self.attempts -= 1
        self.pendingBody = self.replayableBody ?? []
        self.attempt(onFreshConnection: true)
        return true
    }

    // MARK: Answers of the proxy's own

    func respondLocally(_ reason: ProxyReason) {
        self.finishLocally(with: LocalResponse(reason))
    }

    func finishLocally(with response: LocalResponse) {
        switch self.phase {
        case .forwarding(let connection):
            connection.close()
        case .responding, .upgrading:
            // A status line is already out: cut instead.
            self.cut()
            return
        case .connecting, .finished:
            break
        }
        var response = response
        response.requestID = (self.shared.trace.requestIDHeader, self.trace.requestID)
        self.answeredStatus = Int(response.status.code)
        self.answerReason = response.reason?.rawValue ?? "ok"
        let isHead = self.request.method == .HEAD
        self.bytesOut += isHead ? 0 : response.body.utf8.count
        if let reason = response.reason, reason.isShed {
            self.route.metrics.recordShed(reason: reason)
        }
        self.phase = .finished
        self.waitTimer?.cancel()
        self.cancelDeadline()
        let closeConnection = response.closesConnection || !self.clientConnectionOutlivesAnswer || !self.clientAsksKeepAlive || self.isUpgrade
            || self.downstream.isQuiescing
        self.downstream.respond(response, version: self.request.version, withBody: !isHead, closeConnection: closeConnection)
    }

    /// Ends the exchange by closing both of its connections: the only honest signal once a
    /// status line is out, and the end of a request body that stalled or came malformed after
    /// the app began answering. The access log says `cut`.
    func cut() {
        self.answerReason = "cut"
        self.abandon()
        self.downstream.cutConnection()
    }

    /// Ends the exchange where it stands, as when its client leaves: whatever the app was doing
    /// for it is dropped, and the app connection, caught mid-exchange, closes rather than carry
    /// another request.
    func abandon() {
        switch self.phase {
        case .forwarding(let connection), .responding(let connection):
            connection.close()
        case .upgrading(let upgrade):
            upgrade.connection.close()
        case .connecting, .finished:
            break
        }
        self.phase = .finished
        self.cancelDeadline()
    }
}
