/// Which clients want which routing keys. The relay binds a key on the broker when its
/// first client arrives and unbinds it when the last one leaves, so N relays share the
/// load instead of each receiving every event. Pure bookkeeping: the caller performs the
/// bind/unbind that each mutation returns, in the order returned.
public struct SubscriptionRegistry<Client: Hashable & Sendable>: Sendable {
    private var keysByClient: [Client: Set<String>] = [:]
    private var clientsByKey: [String: Set<Client>] = [:]

    public init() {}

    /// Adds keys for a client; returns the keys that no client had before (to bind).
    public mutating func add(_ client: Client, keys: some Sequence<String>) -> [String] {
        var newlyNeeded = [String]()
        for key in keys {
            guard keysByClient[client, default: []].insert(key).inserted else { continue }
            if clientsByKey[key] == nil { newlyNeeded.append(key) }
            clientsByKey[key, default: []].insert(client)
        }
        return newlyNeeded
    }

    /// Removes keys from a client; returns the keys no client has any more (to unbind).
    public mutating func remove(_ client: Client, keys: some Sequence<String>) -> [String] {
        var unneeded = [String]()
        for key in keys {
            guard keysByClient[client]?.remove(key) != nil else { continue }
            if keysByClient[client]?.isEmpty == true { keysByClient[client] = nil }
            clientsByKey[key]?.remove(client)
            if clientsByKey[key]?.isEmpty == true {
                clientsByKey[key] = nil
                unneeded.append(key)
            }
        }
        return unneeded
    }

    public mutating func removeAll(_ client: Client) -> [String] {
        remove(client, keys: Array(keysByClient[client] ?? []))
    }

    public func clients(for key: String) -> Set<Client> { clientsByKey[key] ?? [] }
    public func keys(of client: Client) -> Set<String> { keysByClient[client] ?? [] }
    public var allKeys: [String] { Array(clientsByKey.keys) }
    public var clientCount: Int { keysByClient.count }
}
