import Foundation
import CCurl

private let curlGlobalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

/// Buffers shared with libcurl's callbacks through the userdata pointer.
private final class TransferBuffers {
    var response = [UInt8]()
    var upload: [UInt8]
    var uploadOffset = 0
    let maxResponse: Int
    init(upload: [UInt8], maxResponse: Int) {
        self.upload = upload
        self.maxResponse = maxResponse
    }
}

private let writeCallback: swiftchat_curl_io_cb = { ptr, size, nmemb, userdata in
    let buffers = Unmanaged<TransferBuffers>.fromOpaque(userdata!).takeUnretainedValue()
    let n = size * nmemb
    // A response larger than the cap aborts the transfer instead of growing memory.
    guard buffers.response.count + n <= buffers.maxResponse else { return 0 }
    if n > 0, let ptr {
        ptr.withMemoryRebound(to: UInt8.self, capacity: n) { buffers.response.append(contentsOf: UnsafeBufferPointer(start: $0, count: n)) }
    }
    return n
}

private let readCallback: swiftchat_curl_io_cb = { ptr, size, nmemb, userdata in
    let buffers = Unmanaged<TransferBuffers>.fromOpaque(userdata!).takeUnretainedValue()
    let n = min(size * nmemb, buffers.upload.count - buffers.uploadOffset)
    if n > 0, let ptr {
        buffers.upload.withUnsafeBytes { src in
            UnsafeMutableRawPointer(ptr).copyMemory(from: src.baseAddress! + buffers.uploadOffset, byteCount: n)
        }
        buffers.uploadOffset += n
    }
    return n
}

public struct HTTPResponse: Sendable {
    public let status: Int
    public let body: [UInt8]
    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// A failure of the transfer itself (DNS, connect, TLS, timeout), with curl's message.
public struct CurlError: Error, CustomStringConvertible, Sendable {
    public let code: Int
    public let message: String
    /// The last SMTP/HTTP response code when the server answered (e.g. 550), else 0.
    public let responseCode: Int
    public var description: String { "curl \(code): \(message)" + (responseCode != 0 ? " (server said \(responseCode))" : "") }
    /// A 5xx SMTP reply is permanent: retrying will not help.
    public var isPermanentSMTPFailure: Bool { responseCode >= 500 && responseCode < 600 }
}

/// One easy handle per call: simple, thread-safe, and every transfer has a connect and a
/// total timeout.
public enum Curl {
    private static func perform(url: String, configure: (UnsafeMutableRawPointer) -> Void, upload: [UInt8] = [],
                                timeoutMs: Int, maxResponse: Int = 1 << 20) throws -> HTTPResponse {
        _ = curlGlobalInit
        guard let h = curl_easy_init() else { throw CurlError(code: -1, message: "curl_easy_init failed", responseCode: 0) }
        defer { curl_easy_cleanup(h) }
        let buffers = TransferBuffers(upload: upload, maxResponse: maxResponse)
        let ctx = Unmanaged.passRetained(buffers)
        defer { ctx.release() }
        // libcurl writes into the error buffer during perform: it must stay put until then.
        let errbuf = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errbuf.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        defer { errbuf.deallocate() }
        _ = url.withCString { swiftchat_curl_setopt_string(h, CURLOPT_URL, $0) }
        _ = swiftchat_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = swiftchat_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, min(timeoutMs, 5000))
        _ = swiftchat_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, timeoutMs)
        _ = swiftchat_curl_setopt_callback(h, CURLOPT_WRITEFUNCTION, writeCallback)
        _ = swiftchat_curl_setopt_pointer(h, CURLOPT_WRITEDATA, ctx.toOpaque())
        _ = swiftchat_curl_setopt_callback(h, CURLOPT_READFUNCTION, readCallback)
        _ = swiftchat_curl_setopt_pointer(h, CURLOPT_READDATA, ctx.toOpaque())
        _ = swiftchat_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, errbuf)
        configure(h)
        let rc = curl_easy_perform(h)
        var code: Int = 0
        _ = swiftchat_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &code)
        guard rc == CURLE_OK else {
            let detail = String(cString: errbuf)
            throw CurlError(code: Int(rc.rawValue), message: detail.isEmpty ? String(cString: curl_easy_strerror(rc)) : detail, responseCode: code)
        }
        return HTTPResponse(status: code, body: buffers.response)
    }

    private static func withHeaders<R>(_ headers: [String: String], _ body: (UnsafeMutablePointer<curl_slist>?) throws -> R) rethrows -> R {
        var list: UnsafeMutablePointer<curl_slist>? = nil
        for (k, v) in headers.sorted(by: { $0.key < $1.key }) { list = curl_slist_append(list, "\(k): \(v)") }
        defer { curl_slist_free_all(list) }
        return try body(list)
    }

    /// GET with headers.
    public static func get(_ url: String, headers: [String: String] = [:], timeoutMs: Int = 10_000) throws -> HTTPResponse {
        try withHeaders(headers) { list in
            try perform(url: url, configure: { h in
                _ = swiftchat_curl_setopt_slist(h, CURLOPT_HTTPHEADER, list)
            }, timeoutMs: timeoutMs)
        }
    }

    /// POST of a raw body (JSON or form) with its content type.
    public static func post(_ url: String, body: [UInt8], contentType: String, headers: [String: String] = [:],
                            timeoutMs: Int = 10_000) throws -> HTTPResponse {
        var all = headers
        all["Content-Type"] = contentType
        return try withHeaders(all) { list in
            try perform(url: url, configure: { h in
                _ = swiftchat_curl_setopt_slist(h, CURLOPT_HTTPHEADER, list)
                _ = swiftchat_curl_setopt_long(h, CURLOPT_POST, 1)
                _ = swiftchat_curl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            }, upload: body, timeoutMs: timeoutMs)
        }
    }

    public static func postForm(_ url: String, fields: [(String, String)], headers: [String: String] = [:],
                                timeoutMs: Int = 10_000) throws -> HTTPResponse {
        try post(url, body: Array(formEncode(fields).utf8), contentType: "application/x-www-form-urlencoded",
                 headers: headers, timeoutMs: timeoutMs)
    }

    public static func postJSON(_ url: String, json: [UInt8], headers: [String: String] = [:], timeoutMs: Int = 10_000) throws -> HTTPResponse {
        try post(url, body: json, contentType: "application/json", headers: headers, timeoutMs: timeoutMs)
    }

    public static func formEncode(_ fields: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return fields.map { k, v in
            (k.addingPercentEncoding(withAllowedCharacters: allowed) ?? "") + "=" + (v.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")
        }.joined(separator: "&")
    }

    /// Sends one RFC 5322 message over SMTP (smtp:// or smtps://; STARTTLS when offered
    /// on smtp:// only if `requireTLS`). Throws CurlError; `isPermanentSMTPFailure` tells
    /// a 5xx refusal from a transient failure.
    public static func sendMail(url: String, from: String, to: [String], message: [UInt8], user: String? = nil,
                                password: String? = nil, requireTLS: Bool = false, timeoutMs: Int = 15_000) throws {
        var rcpt: UnsafeMutablePointer<curl_slist>? = nil
        for r in to { rcpt = curl_slist_append(rcpt, "<\(r)>") }
        defer { curl_slist_free_all(rcpt) }
        _ = try perform(url: url, configure: { h in
            _ = "<\(from)>".withCString { swiftchat_curl_setopt_string(h, CURLOPT_MAIL_FROM, $0) }
            _ = swiftchat_curl_setopt_slist(h, CURLOPT_MAIL_RCPT, rcpt)
            _ = swiftchat_curl_setopt_long(h, CURLOPT_UPLOAD, 1)
            _ = swiftchat_curl_setopt_off(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(message.count))
            if requireTLS { _ = swiftchat_curl_setopt_long(h, CURLOPT_USE_SSL, Int(CURLUSESSL_ALL.rawValue)) }
            if let user { _ = user.withCString { swiftchat_curl_setopt_string(h, CURLOPT_USERNAME, $0) } }
            if let password { _ = password.withCString { swiftchat_curl_setopt_string(h, CURLOPT_PASSWORD, $0) } }
        }, upload: message, timeoutMs: timeoutMs)
    }
}
