import NIOCore

/// The client's side of an exchange: the request body as it arrives, and the client's
/// writability. (A client that leaves abandons its exchange: `ProxyExchange.abandon`.)
extension ProxyExchange {
    func clientSentBody(_ body: ByteBuffer) {
        self.requestBodyBytes += body.readableBytes
        if self.requestBodyBytes > self.shared.server.maxBodyBytes {
            self.respondLocally(.bodyTooLarge)
            return
        }
        if self.replayableBody != nil {
            if self.requestBodyBytes <= Self.maxReplayBytes {
                self.replayableBody!.append(body)
            } else {
                self.replayableBody = nil
            }
        }
        switch self.phase {
        case .connecting:
            self.pendingBody.append(body)
        case .forwarding(let connection):
            connection.writeBody(body)
            self.resetDeadline(in: self.route.bodyTimeout)
        case .responding(let connection):
            connection.writeBody(body)
        case .upgrading, .finished:
            break
        }
    }

    func clientSentEnd() {
        self.requestEnded = true
        switch self.phase {
        case .forwarding(let connection), .responding(let connection):
            self.finishRequest(on: connection)
            connection.flush()
        case .connecting, .upgrading, .finished:
            break
        }
    }

    func clientReadComplete() {
        switch self.phase {
        case .forwarding(let connection), .responding(let connection): connection.flush()
        case .connecting, .upgrading, .finished: break
        }
    }

    func clientWritabilityChanged(isWritable: Bool) {
        switch self.phase {
        case .responding(let connection) where isWritable: connection.resumeReadingIfNeeded()
        default: break
        }
    }
}
