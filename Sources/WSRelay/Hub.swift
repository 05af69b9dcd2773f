import Foundation
import NIOCore
import NIOConcurrencyHelpers
import ChatCore

/// A live, authenticated socket as the rest of the relay sees it. Everything that touches
/// the handler hops onto the socket's event loop.
final class RelayClient: Sendable, Hashable {
    let channel: Channel
    let userID: String
    private let handler: NIOLoopBound<WebSocketHandler>

    init(channel: Channel, userID: String, handler: WebSocketHandler) {
        self.channel = channel
        self.userID = userID
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
/// first/last socket of a key, and user -> sockets for membership changes, typing and
/// presence. Events are serialized once (the broker's body is the frame) and the same
/// buffer is written to every socket.
final class Hub: Sendable {
    struct State {
        var registry = SubscriptionRegistry<RelayClient>()
        var byUser: [String: Set<RelayClient>] = [:]
    }

    private let state = NIOLockedValueBox(State())
    let bridge: AMQPBridge

    init(bridge: AMQPBridge) { self.bridge = bridge }

    /// Registers the client for `keys`; `done(ok, firstOfUser)` runs once the broker
    /// bindings exist.
    func subscribe(_ client: RelayClient, keys: [String], done: @escaping @Sendable (Bool, Bool) -> Void) {
        // Computed and enqueued under the lock so binds and unbinds of one key reach the
        // broker in the order of the registry's transitions.
        state.withLockedValue { s in
            let first = s.byUser[client.userID, default: []].isEmpty
            s.byUser[client.userID, default: []].insert(client)
            let newKeys = s.registry.add(client, keys: keys)
            bridge.bind(newKeys) { ok in done(ok, first) }
        }
    }

    /// Removes the client; returns whether it was the user's last socket here and the
    /// room keys it had (for the offline presence event).
    @discardableResult
    func unsubscribe(_ client: RelayClient) -> (last: Bool, rooms: [String]) {
        state.withLockedValue { s in
            let rooms = Array(s.registry.keys(of: client).filter { $0.hasPrefix("room.") })
            let gone = s.registry.removeAll(client)
            if !gone.isEmpty { bridge.unbind(gone) }
            s.byUser[client.userID]?.remove(client)
            let last = s.byUser[client.userID]?.isEmpty ?? true
            if last { s.byUser[client.userID] = nil }
            return (last, rooms)
        }
    }

    /// Whether any socket here wants `key` (a pending unbind of it is then skipped).
    func isInUse(_ key: String) -> Bool {
        state.withLockedValue { !$0.registry.clients(for: key).isEmpty }
    }

    func isSubscribed(_ client: RelayClient, to key: String) -> Bool {
        state.withLockedValue { $0.registry.keys(of: client).contains(key) }
    }

    /// One event from the broker. Membership events change the user's subscriptions in the
    /// same critical section that picks the targets, so the room's next event (behind this
    /// one in the queue) already sees the change.
    func deliver(routingKey: String, body: [UInt8], event: String?, user: String?) {
        let targets: [RelayClient] = state.withLockedValue { s in
            if event == "member.joined", let user, routingKey.hasPrefix("room."), let clients = s.byUser[user] {
                for c in clients {
                    let newKeys = s.registry.add(c, keys: [routingKey])
                    if !newKeys.isEmpty { bridge.bind(newKeys) { _ in } }
                }
            }
            var targets = s.registry.clients(for: routingKey)
            if event == "typing" || event == "presence", let user {
                // Not echoed to the sender's own sockets.
                targets = targets.filter { $0.userID != user }
            }
            if event == "member.left", let user, routingKey.hasPrefix("room."), let clients = s.byUser[user] {
                for c in clients {
                    let gone = s.registry.remove(c, keys: [routingKey])
                    if !gone.isEmpty { bridge.unbind(gone) }
                }
            }
            return Array(targets)
        }
        guard !targets.isEmpty else { return }
        let buffer = ByteBuffer(bytes: body)
        // A session's own key carries its revocation: the event is the last frame, then 4401.
        let closeAfter: UInt16? = routingKey.hasPrefix("session.") ? RelayCloseCode.unauthorized : nil
        for client in targets { client.deliver(buffer, closeAfter: closeAfter) }
    }

    var allKeys: [String] { state.withLockedValue { $0.registry.allKeys } }
    var clientCount: Int { state.withLockedValue { $0.registry.clientCount } }
    var userIDs: [String] { state.withLockedValue { Array($0.byUser.keys) } }
    var allClients: [RelayClient] {
        state.withLockedValue { s in s.byUser.values.reduce(into: Set<RelayClient>()) { $0.formUnion($1) }.map { $0 } }
    }
}
