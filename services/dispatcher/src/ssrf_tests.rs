use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn class(text: &str) -> Option<Blocked> {
    classify(ip(text))
}

#[test]
fn loopback() {
    assert_eq!(class("127.0.0.1"), Some(Blocked::Loopback));
    assert_eq!(class("127.255.0.9"), Some(Blocked::Loopback));
    assert_eq!(class("::1"), Some(Blocked::Loopback));
}

#[test]
fn private() {
    for a in ["10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.0.1", "fc00::1", "fd12:3456::1"] {
        assert_eq!(class(a), Some(Blocked::Private), "{a}");
    }
    assert_eq!(class("172.32.0.1"), None);
}

#[test]
fn link_local_and_metadata() {
    assert_eq!(class("169.254.1.1"), Some(Blocked::LinkLocal));
    assert_eq!(class("fe80::1"), Some(Blocked::LinkLocal));
    assert_eq!(class("febf::1"), Some(Blocked::LinkLocal));
    assert_eq!(class("169.254.169.254"), Some(Blocked::Metadata));
    assert_eq!(class("fd00:ec2::254"), Some(Blocked::Metadata));
}

#[test]
fn unspecified_multicast_broadcast() {
    assert_eq!(class("0.0.0.0"), Some(Blocked::Unspecified));
    assert_eq!(class("::"), Some(Blocked::Unspecified));
    assert_eq!(class("224.0.0.1"), Some(Blocked::Multicast));
    assert_eq!(class("ff02::1"), Some(Blocked::Multicast));
    assert_eq!(class("255.255.255.255"), Some(Blocked::Broadcast));
}

#[test]
fn carrier_grade_nat_and_reserved() {
    assert_eq!(class("100.64.0.1"), Some(Blocked::SharedAddressSpace));
    assert_eq!(class("100.127.255.254"), Some(Blocked::SharedAddressSpace));
    assert_eq!(class("100.128.0.1"), None);
    for a in ["0.1.2.3", "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.19.0.1", "240.0.0.1", "2001:db8::1"]
    {
        assert_eq!(class(a), Some(Blocked::Reserved), "{a}");
    }
}

#[test]
fn ipv6_forms_of_ipv4_addresses_are_read_as_ipv4() {
    assert_eq!(class("::ffff:127.0.0.1"), Some(Blocked::Loopback));
    assert_eq!(class("::ffff:10.0.0.1"), Some(Blocked::Private));
    assert_eq!(class("::ffff:169.254.169.254"), Some(Blocked::Metadata));
    assert_eq!(class("::10.0.0.1"), Some(Blocked::Private), "IPv4-compatible");
    assert_eq!(class("64:ff9b::a9fe:a9fe"), Some(Blocked::Metadata), "NAT64");
    assert_eq!(class("2002:c0a8:0101::1"), Some(Blocked::Private), "6to4 of 192.168.1.1");
    assert_eq!(class("::ffff:8.8.8.8"), None);
}

#[test]
fn public_addresses_pass() {
    for a in ["8.8.8.8", "104.16.0.1", "2606:4700::6810:1", "2a00:1450:4009:81b::200e"] {
        assert_eq!(class(a), None, "{a}");
    }
}

#[test]
fn the_allow_list_lets_chosen_networks_through() {
    let policy = EgressPolicy {
        allow: vec!["10.20.0.0/16".parse().expect("a CIDR"), "fd00:ec2::254".parse().expect("a CIDR")],
    };
    assert!(policy.check(ip("10.20.3.4")).is_ok());
    assert!(policy.check(ip("10.21.3.4")).is_err());
    assert!(policy.check(ip("fd00:ec2::254")).is_ok(), "a /128");
    assert!(policy.check(ip("127.0.0.1")).is_err());
    let err = EgressPolicy::default().check(ip("10.20.3.4")).expect_err("private");
    assert!(err.to_string().contains("private"), "{err}");
}

#[test]
fn every_resolved_address_must_pass() {
    let policy = EgressPolicy::default();
    assert!(policy.check_all("crm.example.com", &[ip("8.8.8.8"), ip("1.1.1.1")]).is_ok());
    assert!(policy.check_all("rebind.example.com", &[ip("8.8.8.8"), ip("127.0.0.1")]).is_err());
    assert!(matches!(policy.check_all("nothing.example.com", &[]), Err(SsrfError::NoAddress(_))));
}

#[test]
fn cidrs_parse_and_print() {
    let cidr: Cidr = "192.168.0.0/16".parse().expect("a CIDR");
    assert_eq!(String::from(cidr), "192.168.0.0/16");
    assert!(cidr.contains(ip("192.168.44.1")));
    assert!(!cidr.contains(ip("::ffff:192.168.44.1")), "families do not mix");
    assert_eq!(String::from("8.8.8.8".parse::<Cidr>().expect("a host")), "8.8.8.8/32");
    assert!("0.0.0.0/0".parse::<Cidr>().expect("everything").contains(ip("1.2.3.4")));
    for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "x/1", ""] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
    let policy: EgressPolicy = serde_json::from_str(r#"{"allow": ["10.0.0.0/8"]}"#).expect("parses");
    assert_eq!(policy.allow.len(), 1);
}

#[tokio::test]
async fn resolution_checks_what_it_returns() {
    let policy = EgressPolicy::default();
    let err = policy.resolve("localhost", 443).await.expect_err("loopback");
    assert!(matches!(err, SsrfError::Blocked { class: Blocked::Loopback, .. }), "{err}");
    assert!(policy.resolve("[::1]", 443).await.is_err());
    let allowed = EgressPolicy { allow: vec!["127.0.0.0/8".parse().expect("a CIDR")] };
    let addrs = allowed.resolve("127.0.0.1", 8080).await.expect("allowed");
    assert_eq!(addrs, vec![SocketAddr::new(ip("127.0.0.1"), 8080)]);
    let metadata =
        policy.resolve_url("http://169.254.169.254/latest/meta-data/").await.expect_err("metadata");
    assert!(matches!(metadata, SsrfError::Blocked { class: Blocked::Metadata, .. }), "{metadata}");
    assert!(policy.resolve_url("https://[::ffff:10.0.0.1]:8443/x").await.is_err());
    let via_url = allowed.resolve_url("https://127.0.0.1/hook").await.expect("allowed");
    assert_eq!(via_url, vec![SocketAddr::new(ip("127.0.0.1"), 443)]);
    assert!(matches!(policy.resolve_url("/relative").await, Err(SsrfError::Url(_))));
}
