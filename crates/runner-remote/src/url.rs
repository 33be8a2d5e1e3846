//! [`RemoteUrl`]: the `--url` of a remote backend, parsed once, strictly.

use tether_core::{Endpoint, Error, Result};

/// Where a backend someone else runs answers: `http://HOST[:PORT][/PATH]`.
///
/// Only plain `http://` (tether has no TLS stack), an explicit host (an IPv4 address,
/// a bracketed IPv6 address, or a DNS name), an optional port (default 80) and an
/// optional path. No user name or password, query or fragment: none of them would
/// reach a probe, so a URL carrying one is refused rather than silently cut.
///
/// Probes and liveness checks join their own absolute path (`/health`) onto the
/// URL's origin (`http://host:port`); the URL's path is only the default MCP
/// endpoint of `tether mcp-proxy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    host: String,
    port: u16,
    path: String,
}

impl RemoteUrl {
    /// Parse `text`; each rejection says what is wrong and how to write it.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::config(format!("bad --url `{text}`: {why}; write http://HOST:PORT, e.g. http://10.0.0.5:8765"))
        };
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(bad("https is not supported (tether has no TLS stack); use http://"));
            }
            Some((scheme, _)) => return Err(bad(&format!("the scheme `{scheme}` is not http"))),
            None => return Err(bad("it does not start with http://")),
        };
        if rest.contains(['?', '#']) {
            return Err(bad("a query or fragment is not used by tether; leave it out"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains whitespace or a control character"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("a user name or password in the URL is not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (ip, after) = bracketed.split_once(']').ok_or_else(|| bad("an IPv6 address without its `]`"))?;
            let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| bad(&format!("`{ip}` is not an IPv6 address")))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("text after the IPv6 address's `]`"))?),
            };
            (ip.to_string(), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            check_host_name(host).map_err(|why| bad(&why))?;
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad(&format!("the port `{p}` is not a number from 1 to 65535"))),
            },
        };
        let path = match path.trim_end_matches('/') {
            "" => String::new(),
            p => p.to_string(),
        };
        Ok(RemoteUrl { host, port, path })
    }

    /// The host (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (80 when the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path without a trailing `/`, empty when the URL has none (or only `/`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where probes go: host and port.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { host: self.host.clone(), port: self.port }
    }

    /// `http://host:port`, what probe paths are joined onto.
    pub fn origin(&self) -> String {
        self.endpoint().url()
    }
}

impl std::fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

/// An IPv4 address or a DNS name (letters, digits, `-` and `.`, labels not empty).
fn check_host_name(host: &str) -> std::result::Result<(), String> {
    if host.is_empty() {
        return Err("it names no host".into());
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if host.contains(':') {
        return Err(format!("`{host}` looks like an IPv6 address; write it in brackets, http://[{host}]:PORT"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    // All digits and dots but not an IPv4 address (`999.1.1.1`): a typo, not a name.
    if name.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("`{host}` is not an IPv4 address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls_parse_into_origin_and_path() {
        for (text, host, port, path, shown) in [
            ("http://127.0.0.1:8765", "127.0.0.1", 8765, "", "http://127.0.0.1:8765"),
            ("http://127.0.0.1:8765/", "127.0.0.1", 8765, "", "http://127.0.0.1:8765"),
            (
                "HTTP://Search.Example.com:9000/mcp/",
                "search.example.com",
                9000,
                "/mcp",
                "http://search.example.com:9000/mcp",
            ),
            ("http://[::1]:80/a/b", "::1", 80, "/a/b", "http://[::1]:80/a/b"),
            ("http://backend", "backend", 80, "", "http://backend:80"),
        ] {
            let u = RemoteUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((u.host(), u.port(), u.path()), (host, port, path), "{text}");
            assert_eq!(u.to_string(), shown);
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (text, why) in [
            ("127.0.0.1:8765", "does not start with http://"),
            ("https://h:1", "https is not supported"),
            ("ftp://h:1", "the scheme `ftp` is not http"),
            ("http://:8765", "names no host"),
            ("http://", "names no host"),
            ("http://h:0", "the port `0`"),
            ("http://h:99999", "the port `99999`"),
            ("http://h:x", "the port `x`"),
            ("http://user:pw@h:1", "user name or password"),
            ("http://h:1/?q=1", "query or fragment"),
            ("http://h:1/#top", "query or fragment"),
            ("http://::1:80", "in brackets"),
            ("http://[::1:80", "without its `]`"),
            ("http://[nope]:80", "not an IPv6 address"),
            ("http://999.1.1.1:80", "not an IPv4 address"),
            ("http://a_b:80", "not a host name"),
            ("http://h:1/a b", "whitespace"),
            ("http://h;rm -rf ~:1", "whitespace"),
        ] {
            let e = RemoteUrl::parse(text).expect_err(text);
            let msg = e.to_string();
            assert!(msg.contains(why), "{text}: {msg}");
            assert!(msg.contains("write http://HOST:PORT"), "{text}: {msg}");
            assert_eq!(e.exit_code(), 2, "{text}");
        }
    }
}
