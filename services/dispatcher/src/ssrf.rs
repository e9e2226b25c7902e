//! The guard against server-side request forgery: a profile's URL is written by a user, and the
//! request leaves from inside our network, so it must not reach our own loopback, private
//! networks, link-local addresses or a cloud's metadata service (which hands out credentials).
//!
//! Every address a host resolves to is checked (a client may connect to any of them), including
//! IPv6 forms that embed an IPv4 address (`::ffff:10.0.0.1`, NAT64, 6to4). The caller must then
//! connect to exactly the addresses checked, not resolve the name again: a DNS answer can change
//! between two lookups (DNS rebinding). An operator allows what is needed (a CRM on the office
//! network) with CIDRs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    Loopback,
    Private,
    LinkLocal,
    /// A cloud instance-metadata address (169.254.169.254, fd00:ec2::254).
    Metadata,
    Unspecified,
    Multicast,
    Broadcast,
    /// 100.64.0.0/10, carrier-grade NAT: some provider's inside, never a CRM's outside.
    SharedAddressSpace,
    /// Documentation, benchmarking, protocol-assignment and reserved ranges.
    Reserved,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blocked::Loopback => "loopback",
            Blocked::Private => "private",
            Blocked::LinkLocal => "link-local",
            Blocked::Metadata => "cloud metadata",
            Blocked::Unspecified => "unspecified",
            Blocked::Multicast => "multicast",
            Blocked::Broadcast => "broadcast",
            Blocked::SharedAddressSpace => "carrier-grade NAT",
            Blocked::Reserved => "reserved",
        })
    }
}

/// An IPv4 or IPv6 network, written `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR (10.0.0.0/8, fd00::/8)")]
pub struct InvalidCidr(String);

impl FromStr for Cidr {
    type Err = InvalidCidr;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidCidr(s.to_owned());
        let (addr, prefix) = s.trim().split_once('/').map_or((s.trim(), None), |(a, p)| (a, Some(p)));
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = InvalidCidr;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Cidr> for String {
    fn from(value: Cidr) -> String {
        format!("{}/{}", value.network, value.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(u128::from(n.to_bits()), u128::from(a.to_bits()), self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(n.to_bits(), a.to_bits(), self.prefix, 128),
            _ => false,
        }
    }
}

fn prefix_eq(network: u128, addr: u128, prefix: u8, width: u32) -> bool {
    // `Cidr::from_str` keeps the prefix within the width.
    let host_bits = width.saturating_sub(u32::from(prefix));
    network.checked_shr(host_bits).unwrap_or(0) == addr.checked_shr(host_bits).unwrap_or(0)
}

/// Why a target was refused.
#[derive(Debug, thiserror::Error)]
pub enum SsrfError {
    #[error("{addr} is a {class} address; allow it explicitly if this CRM really is there")]
    Blocked { addr: IpAddr, class: Blocked },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("{0:?} is not an http(s) URL with a host")]
    Url(String),
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// The addresses a delivery may reach: every public address, plus the allowed networks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPolicy {
    #[serde(default)]
    pub allow: Vec<Cidr>,
}

impl EgressPolicy {
    pub fn check(&self, addr: IpAddr) -> Result<(), SsrfError> {
        match classify(addr) {
            Some(class) if !self.allow.iter().any(|c| c.contains(addr)) => {
                Err(SsrfError::Blocked { addr, class })
            }
            _ => Ok(()),
        }
    }

    /// Checks every address `host` resolved to; all must pass.
    pub fn check_all(&self, host: &str, addrs: &[IpAddr]) -> Result<(), SsrfError> {
        if addrs.is_empty() {
            return Err(SsrfError::NoAddress(host.to_owned()));
        }
        addrs.iter().try_for_each(|a| self.check(*a))
    }

    /// Resolves `host` (a name or an IP literal, IPv6 with or without brackets) and returns the
    /// checked addresses, for the caller to connect to.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SsrfError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|source| SsrfError::Resolve { host: host.to_owned(), source })?
                .collect(),
        };
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        self.check_all(host, &ips)?;
        Ok(addrs)
    }
}

impl EgressPolicy {
    /// [`resolve`](Self::resolve) for the host of `url` (a profile's target), on its port or the
    /// scheme's: when a profile is saved, to refuse it at once, and before each attempt.
    pub async fn resolve_url(&self, url: &str) -> Result<Vec<SocketAddr>, SsrfError> {
        let bad = || SsrfError::Url(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        let port = match (uri.port_u16(), uri.scheme_str()) {
            (Some(port), _) => port,
            (None, Some("https")) => 443,
            (None, Some("http")) => 80,
            (None, _) => return Err(bad()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        self.resolve(host, port).await
    }
}

/// The class of a non-public address, `None` for a public one.
pub fn classify(addr: IpAddr) -> Option<Blocked> {
    match addr {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(a: Ipv4Addr) -> Option<Blocked> {
    let [b0, b1, b2, _] = a.octets();
    Some(match () {
        _ if a == Ipv4Addr::new(169, 254, 169, 254) => Blocked::Metadata,
        _ if a.is_unspecified() => Blocked::Unspecified,
        _ if a.is_loopback() => Blocked::Loopback,
        _ if a.is_private() => Blocked::Private,
        _ if a.is_link_local() => Blocked::LinkLocal,
        _ if a.is_broadcast() => Blocked::Broadcast,
        _ if a.is_multicast() => Blocked::Multicast,
        _ if b0 == 100 && (b1 & 0xc0) == 64 => Blocked::SharedAddressSpace,
        // 0/8 "this network", 192.0.0/24 protocol assignments, 192.0.2/24, 198.51.100/24 and
        // 203.0.113/24 documentation, 198.18/15 benchmarking, 240/4 reserved.
        _ if b0 == 0
            || (b0, b1, b2) == (192, 0, 0)
            || (b0, b1, b2) == (192, 0, 2)
            || (b0, b1, b2) == (198, 51, 100)
            || (b0, b1, b2) == (203, 0, 113)
            || (b0 == 198 && (b1 & 0xfe) == 18)
            || b0 >= 240 =>
        {
            Blocked::Reserved
        }
        _ => return None,
    })
}

fn classify_v6(a: Ipv6Addr) -> Option<Blocked> {
    // An IPv6 address that carries an IPv4 one reaches that IPv4 host.
    if let Some(v4) = embedded_v4(a) {
        return classify_v4(v4);
    }
    let [first, second, ..] = a.segments();
    Some(match () {
        _ if a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => Blocked::Metadata,
        _ if a.is_unspecified() => Blocked::Unspecified,
        _ if a.is_loopback() => Blocked::Loopback,
        _ if (first & 0xfe00) == 0xfc00 => Blocked::Private,
        _ if (first & 0xffc0) == 0xfe80 => Blocked::LinkLocal,
        _ if a.is_multicast() => Blocked::Multicast,
        // Deprecated site-local fec0::/10 and documentation 2001:db8::/32.
        _ if (first & 0xffc0) == 0xfec0 || (first, second) == (0x2001, 0x0db8) => Blocked::Reserved,
        _ => return None,
    })
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:0:0/96`), IPv4-compatible (`::/96`), NAT64
/// (`64:ff9b::/96`) or 6to4 (`2002::/16`) address.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = a.segments();
    let [.., hi6, lo7] = segments;
    let low = Ipv4Addr::new((hi6 >> 8) as u8, hi6 as u8, (lo7 >> 8) as u8, lo7 as u8);
    match segments {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, _, _] if a.to_bits() > 1 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

#[cfg(test)]
#[path = "ssrf_tests.rs"]
mod tests;
