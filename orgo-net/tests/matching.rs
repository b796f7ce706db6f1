//! Policy matching, table-driven: names against domain rules, addresses
//! against IP/CIDR rules and the always-denied set; the learn log and the
//! daemon's config file.

use std::net::IpAddr;

use orgo_net::{
    DeniedSet, DenyKind, LearnEntry, Learned, Mode, NetdConfig, Policy, Verdict, Via,
    always_denied_v4, always_denied_v6,
};
use orgo_template::Template;

/// A policy in a table: `(mode, rules)`, or `None` for no `egress_policy`.
type Rules<'a> = Option<(&'a str, &'a [&'a str])>;

/// The policy of a template with `egress_policy: { mode, rules }`; `None`
/// is a template without one.
fn policy(mode_rules: Rules<'_>) -> Policy {
    let Some((mode, rules)) = mode_rules else {
        return Policy::open();
    };
    let rules: Vec<String> = rules.iter().map(|r| format!("'{r}'")).collect();
    let yaml = format!(
        "api_version: orgo.ai/v1\nname: x@1.0.0\negress_policy: {{ mode: {mode}, rules: [{}] }}\n",
        rules.join(", ")
    );
    let template = Template::from_yaml(&yaml).expect("a valid template");
    Policy::for_template(template.egress_policy())
}

#[test]
fn names_match_exact_domains_and_wildcards() {
    let github = Some(("allow", &["*.github.com", "api.x.com"][..]));
    let blocking = Some(("block", &["*.evil.com", "bad.com"][..]));
    let cases: &[(Rules<'_>, &str, bool)] = &[
        (github, "api.github.com", true),
        (github, "a.b.github.com", true),
        (github, "API.GitHub.COM.", true),
        (github, "github.com", false),
        (github, "evilgithub.com", false),
        (github, "github.com.evil.com", false),
        (github, "api.x.com", true),
        (github, "b.api.x.com", false),
        (github, "x.com", false),
        (github, "", false),
        (github, "1.2.3.4", false),
        (blocking, "good.com", true),
        (blocking, "a.evil.com", false),
        (blocking, "evil.com", true),
        (blocking, "bad.com", false),
        (blocking, "BAD.com.", false),
        (blocking, "sub.bad.com", true),
        (blocking, "not a name", false),
        (None, "anything.example", true),
        (None, "localhost", true),
        (None, "10.0.0.1", false),
        (None, "a..b", false),
        (Some(("allow", &[])), "api.github.com", false),
    ];
    for (rules, name, expected) in cases {
        assert_eq!(
            policy(*rules).allows_name(name),
            *expected,
            "{rules:?} allows_name({name:?})"
        );
    }
}

/// The verdict's kind, to compare in a table.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    Allowed,
    Always,
    Host,
    Extra,
    NotAllowed,
    Blocked,
    Ipv6,
}

fn kind(verdict: &Verdict) -> Kind {
    match verdict {
        Verdict::Allowed => Kind::Allowed,
        Verdict::AlwaysDenied {
            kind: DenyKind::Host,
            ..
        } => Kind::Host,
        Verdict::AlwaysDenied {
            kind: DenyKind::Extra,
            ..
        } => Kind::Extra,
        Verdict::AlwaysDenied { .. } => Kind::Always,
        Verdict::NotAllowed => Kind::NotAllowed,
        Verdict::Blocked(_) => Kind::Blocked,
        Verdict::Ipv6 => Kind::Ipv6,
        other => panic!("an unexpected verdict {other:?}"),
    }
}

/// The test's denied set: the fixed ranges, the computers' range and one
/// address standing for the host's.
fn denied() -> DeniedSet {
    DeniedSet::new(["10.200.0.0/16".parse().expect("a CIDR")])
        .with_host_addresses(["10.99.0.1".parse().expect("an address")])
}

#[test]
fn addresses_are_checked_against_rules_and_the_always_denied_set() {
    use Kind::*;
    let ten = Some(("allow", &["10.0.0.0/8", "2001:db8::/32"][..]));
    let block = Some(("block", &["192.0.2.0/24", "127.0.0.1"][..]));
    let cases: &[(Rules<'_>, &str, Kind)] = &[
        // allow mode: only the rules.
        (ten, "10.1.2.3", Allowed),
        (ten, "11.0.0.1", NotAllowed),
        (ten, "2001:db8::1", Allowed),
        (ten, "2001:db9::1", Ipv6),
        // The always-denied set, even under a rule that holds it.
        (ten, "127.0.0.1", Always),
        (ten, "0.0.0.0", Always),
        (ten, "169.254.169.254", Always),
        (ten, "224.0.0.1", Always),
        (ten, "255.255.255.255", Always),
        (ten, "::1", Always),
        (ten, "::", Always),
        (ten, "fe80::1", Always),
        (ten, "ff02::1", Always),
        (ten, "10.200.0.6", Extra),
        (ten, "10.99.0.1", Host),
        // IPv4 hidden in IPv6.
        (ten, "::ffff:10.1.2.3", Allowed),
        (ten, "::ffff:127.0.0.1", Always),
        (ten, "::ffff:169.254.169.254", Always),
        (ten, "::ffff:10.99.0.1", Host),
        (ten, "64:ff9b::7f00:1", Always),
        (ten, "64:ff9b::a9fe:a9fe", Always),
        (ten, "64:ff9b:1::a9fe:a9fe", Always),
        (ten, "2002:a9fe:a9fe::1", Always),
        (ten, "2002:7f00:1::", Always),
        (ten, "::127.0.0.1", Always),
        (ten, "::a9fe:a9fe", Always),
        (ten, "64:ff9b::a01:203", Ipv6),
        // A rule inside a denied range names it explicitly.
        (Some(("allow", &["127.0.0.1"])), "127.0.0.1", Allowed),
        (Some(("allow", &["127.0.0.1"])), "127.0.0.2", Always),
        (Some(("allow", &["127.0.0.1"])), "::ffff:127.0.0.1", Allowed),
        (
            Some(("allow", &["169.254.169.254"])),
            "169.254.169.254",
            Allowed,
        ),
        (
            Some(("allow", &["169.254.0.0/16"])),
            "169.254.169.254",
            Allowed,
        ),
        (Some(("allow", &["::1"])), "::1", Allowed),
        (Some(("allow", &["10.200.0.6"])), "10.200.0.6", Allowed),
        (Some(("allow", &["10.200.0.6"])), "10.200.0.7", Extra),
        (Some(("allow", &["10.99.0.1"])), "10.99.0.1", Allowed),
        // A wider rule does not.
        (Some(("allow", &["0.0.0.0/0"])), "169.254.169.254", Always),
        (Some(("allow", &["0.0.0.0/0"])), "127.0.0.1", Always),
        (Some(("allow", &["0.0.0.0/0"])), "203.0.113.9", Allowed),
        (Some(("allow", &["0.0.0.0/0"])), "10.99.0.1", Host),
        (Some(("allow", &["::/0"])), "::1", Always),
        (Some(("allow", &["::/0"])), "64:ff9b::7f00:1", Always),
        (Some(("allow", &["::/0"])), "2001:db8::1", Allowed),
        // Domain rules open no address.
        (
            Some(("allow", &["*.github.com"])),
            "140.82.112.3",
            NotAllowed,
        ),
        // block mode: all but the rules; a block rule unlocks nothing.
        (block, "192.0.2.5", Blocked),
        (block, "198.51.100.1", Allowed),
        (block, "127.0.0.1", Always),
        (block, "::ffff:192.0.2.5", Blocked),
        (block, "64:ff9b::c000:205", Blocked),
        (block, "2001:db8::1", Ipv6),
        (block, "169.254.169.254", Always),
        // No policy: all but the always-denied set; no IPv6.
        (None, "203.0.113.1", Allowed),
        (None, "10.0.0.1", Allowed),
        (None, "127.0.0.1", Always),
        (None, "::ffff:169.254.169.254", Always),
        (None, "2001:db8::1", Ipv6),
        (None, "10.200.1.1", Extra),
    ];
    let denied = denied();
    for (rules, addr, expected) in cases {
        let addr: IpAddr = addr.parse().expect("an address");
        let verdict = policy(*rules).check_addr(addr, &denied);
        assert_eq!(
            kind(&verdict),
            *expected,
            "{rules:?} check_addr({addr}): {verdict}"
        );
        assert_eq!(verdict.is_denied(), *expected != Allowed);
    }
}

#[test]
fn a_name_the_policy_allows_decides_for_its_addresses_but_not_the_denied_set() {
    use Kind::*;
    let denied = denied();
    let cases: &[(Rules<'_>, &str, Kind)] = &[
        (Some(("allow", &["*.github.com"])), "140.82.112.3", Allowed),
        (Some(("allow", &["*.github.com"])), "127.0.0.1", Always),
        (
            Some(("allow", &["*.github.com"])),
            "169.254.169.254",
            Always,
        ),
        (Some(("allow", &["*.github.com"])), "10.99.0.1", Host),
        (Some(("allow", &["*.github.com"])), "2001:db8::1", Ipv6),
        (
            Some(("allow", &["*.github.com", "2001:db8::/32"])),
            "2001:db8::1",
            Allowed,
        ),
        (
            Some(("block", &["198.51.100.0/24"])),
            "198.51.100.1",
            Blocked,
        ),
        (
            Some(("block", &["198.51.100.0/24"])),
            "203.0.113.1",
            Allowed,
        ),
        (None, "203.0.113.1", Allowed),
        (None, "10.200.0.2", Extra),
    ];
    for (rules, addr, expected) in cases {
        let addr: IpAddr = addr.parse().expect("an address");
        let verdict = policy(*rules).check_resolved(addr, &denied);
        assert_eq!(
            kind(&verdict),
            *expected,
            "{rules:?} check_resolved({addr}): {verdict}"
        );
    }
}

#[test]
fn verdicts_say_why() {
    let denied = denied();
    let open = Policy::open();
    let say = |policy: &Policy, addr: &str| {
        policy
            .check_addr(addr.parse().expect("an address"), &denied)
            .to_string()
    };
    assert_eq!(
        say(&open, "169.254.169.254"),
        "always denied: a link-local (metadata) address (`169.254.0.0/16`)"
    );
    assert_eq!(
        say(&open, "10.99.0.1"),
        "always denied: an address of the host (`10.99.0.1/32`)"
    );
    assert_eq!(
        say(&open, "10.200.3.4"),
        "always denied: in a range the runtime denies (`10.200.0.0/16`)"
    );
    let block = policy(Some(("block", &["192.0.2.0/24"])));
    assert_eq!(
        say(&block, "192.0.2.1"),
        "blocked by the egress rule `192.0.2.0/24`"
    );
    assert_eq!(
        say(&policy(Some(("allow", &[]))), "192.0.2.1"),
        "no egress rule allows this address"
    );
}

#[test]
fn nft_sets_and_the_fixed_ranges() {
    let p = policy(Some((
        "allow",
        &["*.x.com", "10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"],
    )));
    assert_eq!(p.mode(), Some(Mode::Allow));
    let (v4, v6) = p.nft_cidrs();
    let v4: Vec<String> = v4.iter().map(ToString::to_string).collect();
    let v6: Vec<String> = v6.iter().map(ToString::to_string).collect();
    assert_eq!(v4, ["10.0.0.0/8", "192.0.2.7/32"]);
    assert_eq!(v6, ["2001:db8::/32", "::1/128"]);
    let fixed: Vec<String> = always_denied_v4().iter().map(ToString::to_string).collect();
    assert_eq!(
        fixed,
        [
            "0.0.0.0/8",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "224.0.0.0/4",
            "240.0.0.0/4"
        ]
    );
    let fixed6: Vec<String> = always_denied_v6().iter().map(ToString::to_string).collect();
    assert_eq!(fixed6, ["::/128", "::1/128", "fe80::/10", "ff00::/8"]);
    assert_eq!(Policy::open().mode(), None);
    assert_eq!(Policy::open().nft_cidrs(), (vec![], vec![]));
}

#[test]
fn the_host_addresses_include_loopback() {
    let addrs = orgo_net::host_addresses().expect("getifaddrs works");
    assert!(
        addrs.contains(&"127.0.0.1".parse().expect("an address")),
        "{addrs:?}"
    );
    let denied = DeniedSet::for_host([]).expect("getifaddrs works");
    for addr in addrs {
        assert!(denied.find(addr).is_some(), "{addr} is not denied");
    }
}

/// An error and its causes, joined by `: `.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[test]
fn the_config_file_round_trips_and_checks_its_version_and_rules() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = NetdConfig {
        netns: "/run/netns/orgo-c-0123456789ab".into(),
        proxy_port: 3129,
        dns: "10.0.2.3:53".parse().expect("an address"),
        dns_upstream: "127.0.0.1:5353".parse().expect("an address"),
        policy: policy(Some(("block", &["*.evil.com", "192.0.2.0/24", "::1"]))),
        denied: vec![
            "10.200.0.0/16".parse().expect("a CIDR"),
            "203.0.113.7/32".parse().expect("a CIDR"),
        ],
        learn: true,
        learn_file: dir.path().join("egress-learned.jsonl"),
        control: dir.path().join("netd.sock"),
    };
    let path = dir.path().join("netd.json");
    config.write(&path).expect("written");
    let text = std::fs::read_to_string(&path).expect("readable");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(json["orgo_netd"], 1);
    assert_eq!(
        json["policy"],
        serde_json::json!({"mode": "block", "rules": ["*.evil.com", "192.0.2.0/24", "::1"]})
    );
    assert_eq!(
        json["denied"],
        serde_json::json!(["10.200.0.0/16", "203.0.113.7/32"])
    );
    assert_eq!(NetdConfig::read(&path).expect("read back"), config);

    let open = NetdConfig {
        policy: Policy::open(),
        ..config.clone()
    };
    open.write(&path).expect("written");
    let text = std::fs::read_to_string(&path).expect("readable");
    assert!(text.contains("\"policy\": null"), "{text}");
    assert_eq!(NetdConfig::read(&path).expect("read back"), open);

    let mut json = json;
    json["orgo_netd"] = serde_json::json!(2);
    std::fs::write(&path, json.to_string()).expect("written");
    let error = chain(&NetdConfig::read(&path).expect_err("a newer major"));
    assert!(
        error.starts_with("cannot read the netd config: `")
            && error.contains("written by a newer orgo"),
        "{error}"
    );
    json["orgo_netd"] = serde_json::json!(1);
    json["policy"]["rules"][1] = serde_json::json!("10.0.0.0/33");
    std::fs::write(&path, json.to_string()).expect("written");
    let error = chain(&NetdConfig::read(&path).expect_err("a bad rule"));
    assert!(
        error.contains("`policy.rules[1]`: `10.0.0.0/33` is not a CIDR"),
        "{error}"
    );
}

#[test]
fn learned_destinations_give_the_smallest_policy_that_allows_them() {
    let lines = [
        r#"{"kind":"name","name":"pypi.org","port":443,"via":"sni"}"#,
        r#"{"kind":"name","name":"files.pythonhosted.org","port":443,"via":"sni"}"#,
        r#"{"kind":"name","name":"pypi.org","via":"dns"}"#,
        r#"{"kind":"name","name":"deb.debian.org","port":80,"via":"host"}"#,
        r#"{"kind":"addr","addr":"192.0.2.7","port":5432}"#,
        r#"{"kind":"addr","addr":"::ffff:192.0.2.7","port":5432}"#,
        r#"{"kind":"addr","addr":"2001:db8::5","port":22}"#,
        r#"{"kind":"name","name":"10.1.2.3","port":80,"via":"host"}"#,
    ];
    let mut text = lines.join("\n");
    text.push('\n');
    // A last line cut short by a crash is ignored.
    text.push_str(r#"{"kind":"name","na"#);
    let mut learned = Learned::parse(&text).expect("parsed");
    learned.add(&LearnEntry::Addr {
        addr: "198.51.100.1".parse().expect("an address"),
        port: 53,
    });
    let yaml = learned.minimal_policy();
    assert_eq!(
        yaml,
        "egress_policy:\n  mode: allow\n  rules:\n\
         \x20   - \"deb.debian.org\"\n\
         \x20   - \"files.pythonhosted.org\"\n\
         \x20   - \"pypi.org\"\n\
         \x20   - \"10.1.2.3\"\n\
         \x20   - \"192.0.2.7\"\n\
         \x20   - \"198.51.100.1\"\n\
         \x20   - \"2001:db8::5\"\n"
    );
    // Pasted into a template, it allows exactly those.
    let template = format!("api_version: orgo.ai/v1\nname: x@1.0.0\n{yaml}");
    let template = Template::from_yaml(&template).expect("the YAML is a valid egress_policy");
    let pasted = Policy::for_template(template.egress_policy());
    let denied = DeniedSet::new([]);
    for name in learned.names() {
        assert!(pasted.allows_name(name), "{name}");
    }
    for addr in learned.addrs() {
        assert_eq!(pasted.check_addr(addr, &denied), Verdict::Allowed, "{addr}");
    }
    assert!(!pasted.allows_name("evil.com"));
    assert!(
        pasted
            .check_addr("192.0.2.8".parse().expect("an address"), &denied)
            .is_denied()
    );

    assert_eq!(
        Learned::new().minimal_policy(),
        "egress_policy:\n  mode: allow\n  rules: []\n"
    );
    let bad = Learned::parse("{\"kind\":\"name\",\"name\":\"a.com\",\"via\":\"sni\"}\nnot json\n")
        .expect_err("a bad line");
    assert!(bad.to_string().contains("line `2`"), "{bad}");
    let entry = LearnEntry::Name {
        name: "a.com".into(),
        port: None,
        via: Via::Dns,
    };
    assert_eq!(
        serde_json::to_string(&entry).expect("serialized"),
        r#"{"kind":"name","name":"a.com","via":"dns"}"#
    );
}

#[test]
fn a_learn_file_is_read_bounded() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("learn.jsonl");
    assert_eq!(
        Learned::read(&path).expect("missing is empty"),
        Learned::new()
    );
    std::fs::write(
        &path,
        "{\"kind\":\"addr\",\"addr\":\"192.0.2.1\",\"port\":1}\n",
    )
    .expect("written");
    assert_eq!(Learned::read(&path).expect("read").addrs().count(), 1);
    let file = std::fs::File::create(&path).expect("created");
    file.set_len(orgo_net::MAX_LEARN_FILE + 1).expect("grown");
    let error = Learned::read(&path).expect_err("too large").to_string();
    assert!(error.contains("is larger than"), "{error}");
}
