//! `gregor groups list|describe|delete|reset-offsets`: consumer group administration over
//! plain Kafka protocol (FindCoordinator, ListGroups, DescribeGroups, OffsetFetch,
//! ListOffsets, OffsetCommit, DeleteGroups), so it works against any Kafka-compatible broker.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use gregor_bench::cli::{self, DEFAULT_BOOTSTRAP, invalid};
use gregor_bench::client::admin::{EARLIEST, LATEST};
use gregor_bench::client::{ClientConfig, Cluster, Result};

/// `gregor groups` arguments.
#[derive(Args)]
pub struct GroupsArgs {
    /// Broker to bootstrap from (host:port, comma-separated list allowed).
    #[arg(long, global = true, default_value = DEFAULT_BOOTSTRAP, env = "GREGOR_BOOTSTRAP")]
    bootstrap: String,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// List groups with their state and protocol type.
    List {
        /// Only groups in this state (Empty, Stable, PreparingRebalance, ...), repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// Show a group's state and members, and per partition the committed offset, the log
    /// end offset and the lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Delete groups (only empty ones) and their committed offsets.
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move an empty group's committed offsets. Dry run unless --execute.
    ResetOffsets(ResetArgs),
}

#[derive(Args)]
struct ResetArgs {
    /// Group id.
    group: String,
    /// Topic to reset, repeatable; `topic:0,2` limits it to some partitions.
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Reset every topic the group has committed offsets for.
    #[arg(long, conflicts_with = "topics")]
    all_topics: bool,
    /// To the earliest offset still in the log.
    #[arg(long, group = "target")]
    to_earliest: bool,
    /// To the log end offset.
    #[arg(long, group = "target")]
    to_latest: bool,
    /// To the first offset at or after a time: `2024-05-01T12:00:00Z` (UTC, optional
    /// fraction) or milliseconds since the epoch.
    #[arg(long, group = "target")]
    to_datetime: Option<String>,
    /// To an explicit offset (clamped into the log's range).
    #[arg(long, group = "target", allow_hyphen_values = true)]
    to_offset: Option<i64>,
    /// Apply the change (without it, only print the plan).
    #[arg(long)]
    execute: bool,
}

/// Runs `gregor groups`.
pub fn run(args: GroupsArgs) -> ExitCode {
    cli::run(move || async move {
        let cluster = Cluster::connect(ClientConfig::new(&args.bootstrap)).await?;
        match args.command {
            GroupsCommand::List { states } => {
                let groups = cluster.list_groups(&states).await?;
                println!("{:<40} {:<20} PROTOCOL-TYPE", "GROUP", "STATE");
                for g in groups {
                    println!("{:<40} {:<20} {}", g.group_id, g.state, g.protocol_type);
                }
            }
            GroupsCommand::Describe { group } => describe(&cluster, &group).await?,
            GroupsCommand::Delete { groups } => {
                for g in groups {
                    cluster.delete_group(&g).await?;
                    println!("deleted group {g}");
                }
            }
            GroupsCommand::ResetOffsets(r) => reset_offsets(&cluster, r).await?,
        }
        Ok(())
    })
}

fn dash(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| x.to_string())
}

async fn describe(cluster: &Cluster, group: &str) -> Result<()> {
    let d = cluster.describe_group(group).await?;
    let committed = cluster.fetch_group_offsets(group).await?;
    println!(
        "GROUP {}  STATE {}  PROTOCOL-TYPE {}  PROTOCOL {}  MEMBERS {}",
        d.group_id,
        d.state,
        if d.protocol_type.is_empty() {
            "-"
        } else {
            &d.protocol_type
        },
        if d.protocol.is_empty() {
            "-"
        } else {
            &d.protocol
        },
        d.members.len()
    );
    println!();
    println!(
        "{:<50} {:<20} {:<24} {:<18} ASSIGNMENT",
        "MEMBER-ID", "INSTANCE-ID", "CLIENT-ID", "HOST"
    );
    let mut owner: BTreeMap<(String, i32), &str> = BTreeMap::new();
    for m in &d.members {
        let assigned: Vec<String> = m
            .assignment
            .iter()
            .map(|(t, p)| format!("{t}-{p}"))
            .collect();
        for tp in &m.assignment {
            owner.insert(tp.clone(), &m.member_id);
        }
        println!(
            "{:<50} {:<20} {:<24} {:<18} {}",
            m.member_id,
            m.group_instance_id.as_deref().unwrap_or("-"),
            m.client_id,
            m.client_host,
            if assigned.is_empty() {
                "-".to_string()
            } else {
                assigned.join(",")
            }
        );
    }
    // Every partition either committed or assigned, with its log end offset.
    let mut partitions: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
    partitions.extend(owner.keys().cloned());
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let mut log_end: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (t, ps) in &by_topic {
        // A deleted topic has no end offset; show "-" rather than failing the command.
        if let Ok(ends) = cluster.list_offsets(t, ps, LATEST).await {
            for (p, o) in ends {
                log_end.insert((t.clone(), p), o);
            }
        }
    }
    println!();
    println!(
        "{:<30} {:>9} {:>15} {:>15} {:>10}  MEMBER-ID",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
    );
    for tp in &partitions {
        let current = committed.get(tp).map(|c| c.offset);
        let end = log_end.get(tp).copied();
        let lag = match (current, end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            (None, Some(e)) => Some(e),
            _ => None,
        };
        println!(
            "{:<30} {:>9} {:>15} {:>15} {:>10}  {}",
            tp.0,
            tp.1,
            dash(current),
            dash(end),
            dash(lag),
            owner.get(tp).copied().unwrap_or("-")
        );
    }
    Ok(())
}

/// Parses `--to-datetime`: epoch milliseconds, or `YYYY-MM-DDTHH:MM:SS[.fff][Z]` in UTC.
fn parse_datetime_ms(s: &str) -> std::result::Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("expected YYYY-MM-DDTHH:MM:SS[.fff][Z] (UTC) or epoch ms, got '{s}'");
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    let (time, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let (year, month, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hour, minute, second) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let millis = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        num(&digits)?
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

async fn reset_offsets(cluster: &Cluster, r: ResetArgs) -> Result<()> {
    let d = cluster.describe_group(&r.group).await?;
    if d.state != "Empty" && d.state != "Dead" {
        return Err(invalid(format!(
            "group {} is {} with {} member(s): offsets can only be reset while it is empty \
             (stop its consumers first)",
            r.group,
            d.state,
            d.members.len()
        )));
    }
    let committed = cluster.fetch_group_offsets(&r.group).await?;
    // Which partitions: from --topic (all partitions unless listed) or --all-topics.
    let mut targets: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    if r.all_topics {
        for (t, p) in committed.keys() {
            targets.entry(t.clone()).or_default().push(*p);
        }
    } else if r.topics.is_empty() {
        return Err(invalid(
            "give --topic TOPIC[:P,P...] (repeatable) or --all-topics",
        ));
    } else {
        for spec in &r.topics {
            let (topic, parts) = match spec.split_once(':') {
                Some((t, ps)) => {
                    let parsed: std::result::Result<Vec<i32>, _> =
                        ps.split(',').map(|p| p.trim().parse::<i32>()).collect();
                    (
                        t.to_string(),
                        Some(
                            parsed
                                .map_err(|_| invalid(format!("bad partition list in '{spec}'")))?,
                        ),
                    )
                }
                None => (spec.clone(), None),
            };
            let parts = match parts {
                Some(p) => p,
                None => {
                    let meta = cluster.topic_metadata(&topic, false).await?;
                    meta.partitions.iter().map(|p| p.partition).collect()
                }
            };
            targets.entry(topic).or_default().extend(parts);
        }
    }
    let target_ts = match (&r.to_datetime, r.to_earliest, r.to_latest, r.to_offset) {
        (Some(dt), ..) => Some(parse_datetime_ms(dt).map_err(invalid)?),
        (None, true, _, _) => Some(EARLIEST),
        (None, _, true, _) => Some(LATEST),
        (None, _, _, Some(_)) => None,
        _ => {
            return Err(invalid(
                "give one of --to-earliest, --to-latest, --to-datetime, --to-offset",
            ));
        }
    };
    let mut plan: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (topic, parts) in &targets {
        let mut parts = parts.clone();
        parts.sort_unstable();
        parts.dedup();
        let earliest = cluster.list_offsets(topic, &parts, EARLIEST).await?;
        let latest = cluster.list_offsets(topic, &parts, LATEST).await?;
        let found = match target_ts {
            Some(ts) if ts != EARLIEST && ts != LATEST => {
                Some(cluster.list_offsets(topic, &parts, ts).await?)
            }
            _ => None,
        };
        for p in parts {
            let lo = earliest.get(&p).copied().unwrap_or(0);
            let hi = latest.get(&p).copied().unwrap_or(lo);
            let new = match (target_ts, r.to_offset) {
                (Some(EARLIEST), _) => lo,
                (Some(LATEST), _) => hi,
                // No record at or after the time: the end of the log, as Kafka does.
                (Some(_), _) => found
                    .as_ref()
                    .and_then(|f| f.get(&p).copied())
                    .filter(|o| *o >= 0)
                    .unwrap_or(hi),
                (None, Some(o)) => o.clamp(lo, hi),
                (None, None) => lo,
            };
            plan.insert((topic.clone(), p), new);
        }
    }
    println!(
        "{:<30} {:>9} {:>15} {:>15}",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"
    );
    for (tp, new) in &plan {
        println!(
            "{:<30} {:>9} {:>15} {:>15}",
            tp.0,
            tp.1,
            dash(committed.get(tp).map(|c| c.offset)),
            new
        );
    }
    if plan.is_empty() {
        println!("nothing to reset");
    } else if r.execute {
        cluster.commit_group_offsets(&r.group, &plan).await?;
        println!("reset {} partition(s) of group {}", plan.len(), r.group);
    } else {
        println!("dry run: add --execute to apply");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_datetime_ms;

    #[test]
    fn parses_datetimes_as_utc() {
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_datetime_ms("2024-02-29T12:34:56.789Z"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime_ms("2000-03-01 00:00:00"),
            Ok(951_868_800_000)
        );
        assert_eq!(parse_datetime_ms("1700000000000"), Ok(1_700_000_000_000));
        assert!(parse_datetime_ms("2024-13-01T00:00:00").is_err());
        assert!(parse_datetime_ms("yesterday").is_err());
    }
}
