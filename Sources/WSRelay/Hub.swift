import Foundation
import NIOCore
import NIOConcurrencyHelpers
import ChatCore

/// A live, authenticated socket as the rest of the relay sees it. Everything that touches
/// the handler hops onto the socket's event loop.
final class RelayClient: Sendable, Hashable {
    let channel: Channel
    private let handler: NIOLoopBound<WebSocketHandler>

    init(channel: Channel, handler: WebSocketHandler) {
        self.channel = channel
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    func deliver(_ event: ByteBuffer, closeAfter: UInt16? = nil) {
        let handler = self.handler
        channel.eventLoop.execute { handler.value.deliver(event, closeAfter: closeAfter) }
    }

    func close(code: UInt16, reason: String) {
        let handler = self.handler
        channel.eventLoop.execute { handler.value.closeWith(code: code, reason: reason) }
    }

    static func == (a: RelayClient, b: RelayClient) -> Bool { a === b }
    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}

/// The relay's routing table: routing key -> sockets, with broker bind/unbind on the
/// first/last socket of a key. Events are serialized once (the broker's body is the frame)
/// and the same buffer is written to every socket.
final class Hub: Sendable {
    private let state = NIOLockedValueBox(SubscriptionRegistry<RelayClient>())
    let bridge: AMQPBridge

    init(bridge: AMQPBridge) { self.bridge = bridge }

    /// Registers the client for `keys`; `done(ok)` runs once the broker bindings exist.
    func subscribe(_ client: RelayClient, keys: [String], done: @escaping @Sendable (Bool) -> Void) {
        // Computed and enqueued under the lock so binds and unbinds of one key reach the
        // broker in the order of the registry's transitions.
        state.withLockedValue { registry in
            let newKeys = registry.add(client, keys: keys)
            bridge.bind(newKeys, done: done)
        }
    }

    func unsubscribe(_ client: RelayClient) {
        state.withLockedValue { registry in
            let gone = registry.removeAll(client)
            if !gone.isEmpty { bridge.unbind(gone) }
        }
    }

    func deliver(routingKey: String, body: [UInt8]) {
        let targets = state.withLockedValue { $0.clients(for: routingKey) }
        guard !targets.isEmpty else { return }
        let buffer = ByteBuffer(bytes: body)
        // A session's own key carries its revocation: the event is the last frame, then 4401.
        let closeAfter: UInt16? = routingKey.hasPrefix("session.") ? RelayCloseCode.unauthorized : nil
        for client in targets { client.deliver(buffer, closeAfter: closeAfter) }
    }

    var allKeys: [String] { state.withLockedValue { $0.allKeys } }
    var clientCount: Int { state.withLockedValue { $0.clientCount } }
    var allClients: [RelayClient] {
        state.withLockedValue { registry in
            var all = Set<RelayClient>()
            for key in registry.allKeys { all.formUnion(registry.clients(for: key)) }
            return Array(all)
        }
    }
}
