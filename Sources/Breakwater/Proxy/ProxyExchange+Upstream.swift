import NIOCore
import NIOHTTP1

/// The app's side of an exchange: its response, its failures, and the deadlines that bound
/// waiting for it.
extension ProxyExchange: UpstreamConnectionDelegate {
    /// Only a response body waits for a slow client. A response head is read as soon as it
    /// comes, even while the client is still taking the answer before it: otherwise the
    /// client's slowness would be timed against the app, which could earn it a 504 it did not
    /// cause and open its breaker.
    var wantsUpstreamReads: Bool {
        guard case .responding = self.phase else { return true }
        return self.downstream.isWritable
    }

    /// Parts out of order cannot come from the parser; a part the phase has no use for (the
    /// rest of an answer being dropped for a retry) is ignored.
    func upstreamReceived(_ part: ResponsePart) {
        // Switched on the part, then the phase: a switch on the pair copies both, with a retain
        // and release of the connection and of the head or body, for every part.
        switch part {
        case .head(let head):
            guard case .forwarding(let connection) = self.phase else { return }
            self.receivedResponseHead(head, on: connection)
        case .body(let body):
            guard case .responding = self.phase else {
                self.keepBytesBehindSwitch(body)
                return
            }
            self.bytesOut += body.readableBytes
            if !self.releaseHeldHead(carrying: body) {
                self.downstream.writeResponsePart(.body(.byteBuffer(body)))
            }
            self.resetDeadline(in: self.route.bodyTimeout)
        case .end(let trailers):
            switch self.phase {
            case .responding(let connection):
                self.releaseHeldHead()
                self.finishResponse(trailers: trailers, on: connection)
            case .upgrading(let upgrade):
                // Switch once the parse that delivered this has returned: its handler is removed
                // in the splice, and bytes behind the 101 leave through it. An app that closed
                // before then has been answered for already (`upstreamClosed`).
                upgrade.connection.channel.eventLoop.assumeIsolated().execute {
                    guard case .upgrading = self.phase else { return }
                    self.phase = .finished
                    self.downstream.startTunnel(response: self.clientHead(switchingWith: upgrade.head), upstream: upgrade.connection)
                }
            case .connecting, .forwarding, .finished:
                break
            }
        }
    }

    func upstreamReadComplete() {
        if self.heldHead != nil && self.waitTimer == nil {
            self.waitTimer = self.eventLoop.assumeIsolated().scheduleTask(in: Self.headHold) {
                self.waitTimer = nil
                self.releaseHeldHead()
                self.downstream.flush()
            }
        }
        self.downstream.flush()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable {
            self.downstream.resumeReadingIfNeeded()
        }
    }

    func upstreamClosed(error: (any Error)?) {
        switch self.phase {
        case .forwarding(let connection):
            if !Self.isMalformedResponse(error), self.resendOnFreshConnection(after: connection) { return }
            self.attemptFailed(Self.failure(closedWith: error), on: connection)
        case .responding(let connection) where self.heldHead != nil:
            // Died after its head but before any body: the client has seen nothing yet, so the
            // attempt can still be retried like one that broke before answering.
            self.heldHead = nil
            self.waitTimer?.cancel()
            self.waitTimer = nil
            self.attemptFailed(Self.failure(closedWith: error), on: connection)
        case .responding(let connection) where self.responseFraming == .untilClose && error == nil:
            self.releaseHeldHead()
            // The app's way of ending a body without a length.
            self.upstreamKeepAlive = false
            self.finishResponse(trailers: nil, on: connection)
        case .upgrading(let upgrade) where error == nil:
            // The app agreed and closed before the tunnel opened, often in the same read as its
            // 101: a WebSocket server that closes at once, a protocol that answers and hangs
            // up. The tunnel would have carried what it said and then the close; so does this.
            self.downstream.writeResponsePart(.head(self.clientHead(switchingWith: upgrade.head)))
            if let said = upgrade.said {
                self.bytesOut += said.readableBytes
                self.downstream.writeResponsePart(.body(.byteBuffer(said)))
            }
            self.finishResponse(trailers: nil, on: upgrade.connection)
        case .responding, .upgrading:
            self.cut()
        case .connecting, .finished:
            break
        }
    }

    /// What the app sent behind its 101 and before its close (`UpstreamHandler.channelInactive`):
    /// kept for the client. A body part in any other
    /// phase is the rest of an answer being dropped for a retry.
    private func keepBytesBehindSwitch(_ bytes: ByteBuffer) {
        guard case .upgrading(let upgrade) = self.phase else { return }
        upgrade.said.setOrWriteImmutableBuffer(bytes)
    }

    /// The 101 as the client gets it.
    private func clientHead(switchingWith upgradeHead: ResponseHead) -> EncodedHead {
        HeaderRewriting.clientResponse(
            upgradeHead,
            fields: MessageFields(upgradeHead.headers),
            framing: .noBody,
            clientVersion: self.request.version,
            keepAlive: true,
            requestID: (self.shared.trace.requestIDHeader, self.trace.requestID),
            allocator: self.loop.allocator
        )
    }

    /// An error of the response parser: the app did answer, in bytes no HTTP reader takes, so
    /// the request reached it.
    private static func isMalformedResponse(_ error: (any Error)?) -> Bool {
        error is HTTPParserError
    }

    /// How an attempt whose answer ended with its connection (and `error`) failed: an answer
    /// the parser refuses is malformed, and not retried; one cut off by the close (the
    /// parser's complaint is only the early end) broke, like a reset.
    private static func failure(closedWith error: (any Error)?) -> RetryPolicy.Failure {
        guard Self.isMalformedResponse(error), error as? HTTPParserError != .invalidEOFState else { return .reset }
        return .malformedResponse
    }

    // MARK: The response

    private func receivedResponseHead(_ head: ResponseHead, on connection: UpstreamConnection) {
        let fields = MessageFields(head.headers)
        if fields.hasUnforwardableFraming(version: head.version) || (head.status == .switchingProtocols && !self.isUpgrade) {
            // A broken answer, like one the parser refuses: re-framed as plain `chunked`, a
            // body in another coding would reach the client still encoded with nothing to say
            // so, a length past `Int.max` could not be told to the client, and a switch nobody
            // asked for leaves no HTTP to read after it.
            self.attemptFailed(.malformedResponse, on: connection)
            return
        }
        let status = Int(head.status.code)
        self.responseHeadAt = self.now
        self.answeredStatus = status
        self.answerReason = "ok"
        let outcome: CircuitBreaker.Outcome = self.route.isFailure(status: status) ? .failure : .success
        if self.route.retryPolicy.retries(status: status), let delay = self.retryDelay(after: .status(status)) {
            // This answer is dropped for another try; its connection, mid-response, goes too.
            self.recordOutcome(outcome)
            self.endAttempt(closing: connection)
            self.retry(after: delay, failure: .status(status))
            return
        }
        if head.status == .switchingProtocols {
            self.recordOutcome(outcome)
            // Neither connection carries another request after a switch, tunnel or not (an
            // earlier attempt's answer may have set these).
            (self.upstreamKeepAlive, self.clientKeepAlive) = (false, false)
            self.phase = .upgrading(ProtocolSwitch(connection: connection, head: head))
            self.cancelDeadline()
            return
        }
        self.responseFraming = MessageFraming(response: head, fields: fields, requestMethod: self.request.method)
        // After an upgrade request the reader at either end (llhttp in uvicorn's httptools, the
        // client's) may have stopped parsing HTTP, even when the answer refused the switch: neither
        // connection is trusted with another request then. An answer that comes before the
        // request is whole keeps the client only if the rest of the body can be dropped.
        self.upstreamKeepAlive = fields.keepsAlive(version: head.version) && self.responseFraming != .untilClose && !self.isUpgrade
        self.clientKeepAlive =
            self.clientAsksKeepAlive && self.clientConnectionOutlivesAnswer && !self.isUpgrade && !self.downstream.isQuiescing
            && (self.request.version.speaksChunked || self.responseFraming != .untilClose)
            && (self.request.version.speaksChunked || self.responseFraming != .chunked)
        self.phase = .responding(connection)
        self.resetDeadline(in: self.route.bodyTimeout)
        let clientHead = HeaderRewriting.clientResponse(
            head,
            fields: fields,
            framing: self.responseFraming,
            clientVersion: self.request.version,
            keepAlive: self.clientKeepAlive,
            requestID: (self.shared.trace.requestIDHeader, self.trace.requestID),
            allocator: self.loop.allocator
        )
        if self.responseFraming == .noBody {
            self.recordOutcome(outcome)
            self.downstream.writeResponsePart(.head(clientHead))
            return
        }
        // The head waits for the first piece of body (at most `headHold`): an app that dies
        // between its head and its body — a crash mid-write — can then still be retried. The
        // hold's timer starts only if the body is not in the same read (see
        // `upstreamReadComplete`), which for small answers it always is.
        self.heldHead = (clientHead, outcome)
    }

    /// Writes the held response head to the client, once, with the first piece of body when
    /// that fits in the head's buffer (`EncodedHead.appendBody(ifItFits:)`).
    ///
    /// - Returns: whether `body` went out with the head.
    @discardableResult
    private func releaseHeldHead(carrying body: ByteBuffer? = nil) -> Bool {
        guard case (var head, let outcome)? = self.heldHead else { return false }
        self.heldHead = nil  // the head's buffer is now `head`'s alone: appending copies nothing else
        self.waitTimer?.cancel()
        self.waitTimer = nil
        self.recordOutcome(outcome)
        let carried = body.map { head.appendBody(ifItFits: $0) } ?? false
        self.downstream.writeResponsePart(.head(head))
        return carried
    }

    private func finishResponse(trailers: HTTPHeaders?, on connection: UpstreamConnection) {
        let pool = self.pool
        self.phase = .finished
        self.cancelDeadline()
        pool.release(connection, reusable: self.requestForwarded && self.upstreamKeepAlive)
        self.downstream.finishResponse(trailers: trailers, closeConnection: !self.clientKeepAlive)
    }

    // MARK: Deadlines

    /// Moves the deadline to `delay` from now: the response's, or its body's while it
    /// streams. The timer is the connection's (`DownstreamHandler.setExchangeDeadline`), so a
    /// body streaming thousands of pieces costs a clock read per piece, not a timer.
    func resetDeadline(in delay: TimeAmount) {
        self.downstream.setExchangeDeadline(self.now + delay)
    }

    func cancelDeadline() {
        self.downstream.setExchangeDeadline(nil)
    }

    /// The deadline passed: called by the connection's timer.
    func deadlinePassed() {
        switch self.phase {
        case .forwarding(let connection) where self.requestForwarded || !connection.isWritable:
            // No answer in time; or the app stopped taking the body (its socket is full, the
            // client's reads are held for it): the app's stall, not the client's, as nginx's
            // `proxy_send_timeout` has it. Answered 504, and the breaker hears of it.
            self.attemptFailed(.timeout, on: connection)
        case .forwarding, .responding:
            // A body stalled longer than `body_timeout`, in either direction.
            self.cut()
        case .connecting, .upgrading, .finished:
            break
        }
    }
}
