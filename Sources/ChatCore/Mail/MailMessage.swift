import Foundation

/// An email as the Worker sends it: RFC 5322 headers and a multipart/alternative body
/// (plain text and HTML), each part base64-encoded so any UTF-8 text travels safely.
public struct MailMessage: Sendable, Equatable {
    public var from: String          // "Name <addr>" or "addr"
    public var to: String
    public var subject: String
    public var text: String
    public var html: String?
    public var messageID: String     // without angle brackets

    public init(from: String, to: String, subject: String, text: String, html: String? = nil, messageID: String) {
        self.from = from
        self.to = to
        self.subject = subject
        self.text = text
        self.html = html
        self.messageID = messageID
    }

    /// The bare address of a "Name <addr>" string.
    public static func address(_ s: String) -> String {
        if let lt = s.lastIndex(of: "<"), let gt = s.lastIndex(of: ">"), lt < gt {
            return String(s[s.index(after: lt)..<gt])
        }
        return s.trimmingCharacters(in: .whitespaces)
    }

    /// Header values never carry CR/LF (no header injection); non-ASCII uses RFC 2047.
    static func headerValue(_ s: String) -> String {
        let clean = s.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        if clean.unicodeScalars.allSatisfy({ $0.isASCII }) { return clean }
        return "=?UTF-8?B?" + Data(clean.utf8).base64EncodedString() + "?="
    }

    static func base64Lines(_ s: String) -> String {
        let b = Data(s.utf8).base64EncodedString()
        var out = [String]()
        var i = b.startIndex
        while i < b.endIndex {
            let j = b.index(i, offsetBy: 76, limitedBy: b.endIndex) ?? b.endIndex
            out.append(String(b[i..<j]))
            i = j
        }
        return out.joined(separator: "\r\n")
    }

    public func rfc5322(date: Date = Date()) -> [UInt8] {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        let boundary = "=_swiftchat_" + Hex.encode(Crypto.randomBytes(12))
        var lines = [
            "From: " + MailMessage.headerValue(from),
            "To: " + MailMessage.headerValue(to),
            "Subject: " + MailMessage.headerValue(subject),
            "Date: " + formatter.string(from: date),
            "Message-ID: <" + MailMessage.headerValue(messageID) + ">",
            "MIME-Version: 1.0",
        ]
        if let html {
            lines += [
                "Content-Type: multipart/alternative; boundary=\"\(boundary)\"",
                "",
                "--\(boundary)",
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: base64",
                "",
                MailMessage.base64Lines(text),
                "--\(boundary)",
                "Content-Type: text/html; charset=utf-8",
                "Content-Transfer-Encoding: base64",
                "",
                MailMessage.base64Lines(html),
                "--\(boundary)--",
                "",
            ]
        } else {
            lines += [
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: base64",
                "",
                MailMessage.base64Lines(text),
                "",
            ]
        }
        return Array(lines.joined(separator: "\r\n").utf8)
    }
}

/// A task on the `tasks.email` queue. `kind` says how the Worker renders it:
/// "verify_email" and "password_reset" from a template (links built from the configured
/// public URL, never from a request's Host header), "message" as given.
public struct EmailTask: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String?
    public var to: String
    public var display_name: String?
    public var token: String?
    public var subject: String?
    public var text: String?
    public var html: String?

    public init(id: String, kind: String? = nil, to: String, display_name: String? = nil, token: String? = nil,
                subject: String? = nil, text: String? = nil, html: String? = nil) {
        self.id = id
        self.kind = kind
        self.to = to
        self.display_name = display_name
        self.token = token
        self.subject = subject
        self.text = text
        self.html = html
    }
}

/// The emails the product sends, as plain text and HTML.
public enum EmailTemplates {
    public struct Rendered: Equatable {
        public let subject: String
        public let text: String
        public let html: String?
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
            .replacingOccurrences(of: "'", with: "&#39;")
    }

    static func link(_ publicURL: String, _ path: String, _ token: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-_")
        return publicURL + path + "?token=" + (token.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")
    }

    /// A greeting, a sentence, the token's link and a closing sentence, as text and HTML.
    static func linkEmail(_ task: EmailTask, publicURL: String, path: String, name: String,
                          subject: String, intro: String, outro: String) -> Rendered? {
        guard let token = task.token, !token.isEmpty else { return nil }
        let url = link(publicURL, path, token)
        return Rendered(
            subject: subject,
            text: "Hello \(name),\n\n\(intro)\n\n\(url)\n\n\(outro)\n",
            html: "<p>Hello \(escape(name)),</p><p>\(escape(intro))</p><p><a href=\"\(escape(url))\">\(escape(url))</a></p><p>\(escape(outro))</p>")
    }

    /// nil when the task is malformed for its kind.
    public static func render(_ task: EmailTask, publicURL: String) -> Rendered? {
        let name = task.display_name.map { $0.isEmpty ? "there" : $0 } ?? "there"
        switch task.kind ?? "message" {
        case "message":
            guard let subject = task.subject, let text = task.text else { return nil }
            return Rendered(subject: subject, text: text, html: task.html)
        case "verify_email":
            return linkEmail(task, publicURL: publicURL, path: "/verify-email", name: name,
                             subject: "Verify your email address",
                             intro: "Please confirm your email address to finish creating your swiftchat account:",
                             outro: "The link works once and expires in 24 hours. If you did not sign up, ignore this email.")
        case "password_reset":
            return linkEmail(task, publicURL: publicURL, path: "/reset-password", name: name,
                             subject: "Reset your swiftchat password",
                             intro: "Someone (hopefully you) asked to reset the password of your swiftchat account. Choose a new one here:",
                             outro: "The link works once and expires in 1 hour. If you did not ask for it, ignore this email: your password stays as it is.")
        default:
            return nil
        }
    }
}
