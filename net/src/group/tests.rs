//! State machine and coordinator tests, with time driven by hand.

use bytes::Bytes;

use super::coordinator::{CommitOffset, CommitRequest, GroupCoordinator, group_partition};
use super::oneshot::Receiver;
use super::records::{self, RecordKey};
use super::state::{
    GroupConfig, GroupError, GroupState, JoinRequest, JoinResponse, Reply, SyncRequest,
    SyncResponse,
};

const G: &str = "g1";
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const DELAY_MS: i64 = 3_000;

fn cfg() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: DELAY_MS,
        offsets_retention_ms: 60_000,
        ..GroupConfig::default()
    }
}

fn coordinator() -> GroupCoordinator {
    GroupCoordinator::new(cfg(), 4, 0xabc)
}

fn protos(names: &[&str]) -> Vec<(String, Bytes)> {
    names
        .iter()
        .map(|n| (n.to_string(), Bytes::from(format!("meta-{n}"))))
        .collect()
}

fn join_req(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protos(protocols),
        require_known_member_id: true,
    }
}

fn now_reply<T>(r: Reply<T>) -> T {
    match r {
        Reply::Now(v) => v,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

fn later<T>(r: Reply<T>) -> Receiver<T> {
    match r {
        Reply::Now(_) => panic!("expected a parked request"),
        Reply::Later(rx) => rx,
    }
}

fn ready<T>(rx: &mut Receiver<T>) -> T {
    rx.try_recv()
        .expect("parked request should have been answered")
}

/// Full dynamic join: MEMBER_ID_REQUIRED, then the real join (parked).
fn join_dynamic(c: &mut GroupCoordinator, now_ms: i64) -> (String, Receiver<JoinResponse>) {
    let first = now_reply(c.join(G, join_req("", None, &["range"]), now_ms));
    assert_eq!(first.error, Some(GroupError::MemberIdRequired));
    assert!(!first.member_id.is_empty());
    let rx = later(c.join(G, join_req(&first.member_id, None, &["range"]), now_ms));
    (first.member_id, rx)
}

fn sync(
    c: &mut GroupCoordinator,
    member: &str,
    generation: i32,
    assignments: &[(&str, &str)],
    now_ms: i64,
) -> Reply<SyncResponse> {
    c.sync(
        G,
        SyncRequest {
            member_id: member.to_string(),
            group_instance_id: None,
            generation_id: generation,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
                .collect(),
        },
        now_ms,
    )
}

fn state(c: &GroupCoordinator) -> GroupState {
    c.group(G).map(|g| g.state()).unwrap_or(GroupState::Dead)
}

/// Three dynamic members joined within the initial delay and synced: returns their ids
/// (leader first) and the generation.
fn stable_group_of_three(c: &mut GroupCoordinator) -> (Vec<String>, i32) {
    let (a, mut ra) = join_dynamic(c, 0);
    let (b, mut rb) = join_dynamic(c, 100);
    let (d, mut rd) = join_dynamic(c, 200);
    c.tick(DELAY_MS);
    assert!(
        ra.try_recv().is_none(),
        "members arrived during the delay: it restarts"
    );
    c.tick(2 * DELAY_MS);
    let (ja, jb, jd) = (ready(&mut ra), ready(&mut rb), ready(&mut rd));
    assert_eq!(ja.leader_id, a);
    let generation = ja.generation_id;
    let mut sb = later(sync(c, &b, generation, &[], 7_000));
    let mut sd = later(sync(c, &d, generation, &[], 7_000));
    let mut sa = later(sync(
        c,
        &a,
        generation,
        &[(&a, "A"), (&b, "B"), (&d, "D")],
        7_000,
    ));
    assert_eq!(ready(&mut sa).assignment, Bytes::from("A"));
    assert_eq!(ready(&mut sb).assignment, Bytes::from("B"));
    assert_eq!(ready(&mut sd).assignment, Bytes::from("D"));
    assert_eq!(jb.generation_id, generation);
    assert_eq!(jd.generation_id, generation);
    assert_eq!(state(c), GroupState::Stable);
    (vec![a, b, d], generation)
}

#[test]
fn member_id_required_then_join_completes_after_initial_delay() {
    let mut c = coordinator();
    let (id, mut rx) = join_dynamic(&mut c, 0);
    assert_eq!(state(&c), GroupState::PreparingRebalance);
    c.tick(DELAY_MS - 1);
    assert!(rx.try_recv().is_none(), "must wait for the initial delay");
    c.tick(DELAY_MS);
    let j = ready(&mut rx);
    assert_eq!(j.error, None);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader_id, id);
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(j.members.len(), 1);
    assert_eq!(j.members[0].metadata, Bytes::from("meta-range"));
    assert_eq!(state(&c), GroupState::CompletingRebalance);
}

#[test]
fn three_members_one_generation_leader_sees_all_followers_none() {
    let mut c = coordinator();
    let (a, mut ra) = join_dynamic(&mut c, 0);
    let (_b, mut rb) = join_dynamic(&mut c, 10);
    let (_d, mut rd) = join_dynamic(&mut c, 20);
    c.tick(2 * DELAY_MS);
    let (ja, jb, jd) = (ready(&mut ra), ready(&mut rb), ready(&mut rd));
    assert_eq!(ja.members.len(), 3);
    assert!(jb.members.is_empty() && jd.members.is_empty());
    assert!(ja.generation_id == jb.generation_id && jb.generation_id == jd.generation_id);
    assert_eq!(jb.leader_id, a);
    // Followers syncing before the leader wait for it.
    let mut c2 = coordinator();
    let (ids, _) = stable_group_of_three(&mut c2);
    assert_eq!(ids.len(), 3);
}

#[test]
fn initial_delay_extends_while_members_arrive_but_not_past_rebalance_timeout() {
    let mut c = coordinator();
    let (_a, mut ra) = join_dynamic(&mut c, 0);
    let (_b, _rb) = join_dynamic(&mut c, 2_000);
    c.tick(DELAY_MS);
    assert!(
        ra.try_recv().is_none(),
        "a member arrived during the delay: wait again"
    );
    c.tick(2 * DELAY_MS - 1);
    assert!(ra.try_recv().is_none());
    c.tick(2 * DELAY_MS);
    assert_eq!(ready(&mut ra).members.len(), 2);

    // Members arriving forever cannot hold the group past the rebalance timeout.
    let mut c = coordinator();
    let (_a, mut ra) = join_dynamic(&mut c, 0);
    let mut keep = Vec::new();
    let mut t = 0;
    while t < i64::from(REBALANCE_MS) {
        t += 1_000;
        keep.push(join_dynamic(&mut c, t));
        c.tick(t);
        if ra.try_recv().is_some() {
            break;
        }
    }
    assert!(t <= i64::from(REBALANCE_MS), "completed at {t}");
}

#[test]
fn session_timeout_removes_silent_member_and_rebalances() {
    let mut c = coordinator();
    let (ids, generation) = stable_group_of_three(&mut c);
    let (a, b) = (&ids[0], &ids[1]);
    // a and b heartbeat; the third stays silent.
    let mut t = 7_000;
    while t + 2_000 < 7_000 + i64::from(SESSION_MS) {
        t += 2_000;
        assert_eq!(c.heartbeat(G, a, None, generation, t), Ok(()));
        assert_eq!(c.heartbeat(G, b, None, generation, t), Ok(()));
        c.tick(t);
    }
    assert_eq!(state(&c), GroupState::Stable, "not yet expired at {t}");
    t = 7_000 + i64::from(SESSION_MS);
    assert_eq!(c.heartbeat(G, a, None, generation, t), Ok(()));
    assert_eq!(c.heartbeat(G, b, None, generation, t), Ok(()));
    c.tick(t);
    assert_eq!(state(&c), GroupState::PreparingRebalance);
    assert_eq!(c.group(G).unwrap().member_count(), 2);
    assert_eq!(
        c.heartbeat(G, a, None, generation, t + 1),
        Err(GroupError::RebalanceInProgress)
    );
    let mut ra = later(c.join(G, join_req(a, None, &["range"]), t + 2));
    assert!(ra.try_recv().is_none(), "b has not rejoined yet");
    let mut rb = later(c.join(G, join_req(b, None, &["range"]), t + 3));
    let (ja, jb) = (ready(&mut ra), ready(&mut rb));
    assert_eq!(ja.generation_id, generation + 1);
    assert_eq!(ja.members.len(), 2);
    assert_eq!(jb.generation_id, generation + 1);
    assert_eq!(
        c.heartbeat(G, &ids[2], None, generation, t + 4),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn rebalance_timeout_drops_members_that_do_not_rejoin() {
    let mut c = coordinator();
    let (ids, generation) = stable_group_of_three(&mut c);
    // The leader rejoins (e.g. a subscription change): everyone must rejoin.
    let mut ra = later(c.join(G, join_req(&ids[0], None, &["range"]), 8_000));
    // The others keep heartbeating (they are alive) but never rejoin: max.poll.interval.
    let mut t = 8_000;
    while t < 8_000 + i64::from(REBALANCE_MS) - 1_000 {
        t += 1_000;
        let _ = c.heartbeat(G, &ids[1], None, generation, t);
        let _ = c.heartbeat(G, &ids[2], None, generation, t);
        c.tick(t);
        assert!(ra.try_recv().is_none(), "completed early at {t}");
    }
    c.tick(8_000 + i64::from(REBALANCE_MS));
    let j = ready(&mut ra);
    assert_eq!(j.generation_id, generation + 1);
    assert_eq!(j.members.len(), 1);
    assert_eq!(state(&c), GroupState::CompletingRebalance);
}

#[test]
fn leave_triggers_rebalance_and_last_leave_empties_group() {
    let mut c = coordinator();
    let (ids, generation) = stable_group_of_three(&mut c);
    let res = c.leave(G, &[(ids[2].clone(), None), ("nope".into(), None)], 8_000);
    assert_eq!(res, vec![Ok(()), Err(GroupError::UnknownMemberId)]);
    assert_eq!(state(&c), GroupState::PreparingRebalance);
    let mut ra = later(c.join(G, join_req(&ids[0], None, &["range"]), 8_001));
    let mut rb = later(c.join(G, join_req(&ids[1], None, &["range"]), 8_002));
    assert_eq!(ready(&mut ra).generation_id, generation + 1);
    assert_eq!(ready(&mut rb).generation_id, generation + 1);
    let res = c.leave(G, &[(ids[0].clone(), None), (ids[1].clone(), None)], 9_000);
    assert_eq!(res, vec![Ok(()), Ok(())]);
    assert_eq!(state(&c), GroupState::Empty);
}

#[test]
fn sync_in_wrong_state_or_generation_is_refused() {
    let mut c = coordinator();
    let (ids, generation) = stable_group_of_three(&mut c);
    let r = now_reply(sync(&mut c, &ids[1], generation + 5, &[], 8_000));
    assert_eq!(r.error, Some(GroupError::IllegalGeneration));
    let r = now_reply(sync(&mut c, "ghost", generation, &[], 8_000));
    assert_eq!(r.error, Some(GroupError::UnknownMemberId));
    // Stable: a repeated sync returns the member's assignment.
    let r = now_reply(sync(&mut c, &ids[1], generation, &[], 8_000));
    assert_eq!(r.assignment, Bytes::from("B"));
    // During a rebalance a parked sync is failed with REBALANCE_IN_PROGRESS.
    let _ra = later(c.join(G, join_req(&ids[0], None, &["range"]), 9_000));
    let r = now_reply(sync(&mut c, &ids[1], generation, &[], 9_000));
    assert_eq!(r.error, Some(GroupError::RebalanceInProgress));
}

#[test]
fn protocol_selection_votes_and_rejects_incompatible_members() {
    let mut c = GroupCoordinator::new(
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..cfg()
        },
        1,
        1,
    );
    let mut req = join_req("", None, &["range", "roundrobin"]);
    req.require_known_member_id = false;
    let mut r1 = later(c.join(G, req, 0));
    let j1 = ready(&mut r1);
    assert_eq!(j1.protocol_name.as_deref(), Some("range"));
    // Two more members preferring roundrobin: the vote moves to roundrobin.
    let mut req2 = join_req("", None, &["roundrobin", "range"]);
    req2.require_known_member_id = false;
    let r2 = later(c.join(G, req2.clone(), 10));
    let r3 = later(c.join(G, req2, 10));
    let mut r1 = later(c.join(
        G,
        join_req(&j1.member_id, None, &["range", "roundrobin"]),
        11,
    ));
    let j = ready(&mut r1);
    assert_eq!(j.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(
        j.members
            .iter()
            .map(|m| m.metadata.clone())
            .collect::<Vec<_>>(),
        vec![Bytes::from("meta-roundrobin"); 3]
    );
    drop((r2, r3));
    // A member sharing no protocol is refused.
    let r = now_reply(c.join(G, join_req("", None, &["sticky-only"]), 12));
    assert_eq!(r.error, Some(GroupError::InconsistentGroupProtocol));
    let mut bad_type = join_req("", None, &["range"]);
    bad_type.protocol_type = "connect".into();
    assert_eq!(
        now_reply(c.join(G, bad_type, 12)).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut bad_session = join_req("", None, &["range"]);
    bad_session.session_timeout_ms = 10;
    assert_eq!(
        now_reply(c.join(G, bad_session, 12)).error,
        Some(GroupError::InvalidSessionTimeout)
    );
}

fn static_stable_pair(c: &mut GroupCoordinator) -> (String, String, i32) {
    let mut ra = later(c.join(G, join_req("", Some("inst-a"), &["range"]), 0));
    let mut rb = later(c.join(G, join_req("", Some("inst-b"), &["range"]), 0));
    c.tick(2 * DELAY_MS);
    let (ja, jb) = (ready(&mut ra), ready(&mut rb));
    let generation = ja.generation_id;
    let (a, b) = (ja.member_id, jb.member_id);
    let _sb = later(sync(c, &b, generation, &[], 6_100));
    let mut sa = later(sync(c, &a, generation, &[(&a, "A"), (&b, "B")], 6_100));
    assert_eq!(ready(&mut sa).assignment, Bytes::from("A"));
    (a, b, generation)
}

#[test]
fn static_member_restart_within_session_keeps_assignment_without_rebalance() {
    let mut c = coordinator();
    let (a, b, generation) = static_stable_pair(&mut c);
    // b's process restarts: a new join with no member id and the same instance id.
    let j = now_reply(c.join(G, join_req("", Some("inst-b"), &["range"]), 8_000));
    assert_eq!(j.error, None);
    assert_ne!(j.member_id, b, "a new member id replaces the old one");
    assert_eq!(j.generation_id, generation, "no new generation");
    assert_eq!(state(&c), GroupState::Stable);
    let s = now_reply(sync(&mut c, &j.member_id, generation, &[], 8_001));
    assert_eq!(
        s.assignment,
        Bytes::from("B"),
        "the old assignment carries over"
    );
    // The old incarnation is fenced.
    assert_eq!(
        c.heartbeat(G, &b, Some("inst-b"), generation, 8_002),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(
        c.heartbeat(G, &a, Some("inst-a"), generation, 8_002),
        Ok(())
    );
    assert_eq!(
        c.heartbeat(G, &j.member_id, Some("inst-b"), generation, 8_002),
        Ok(())
    );
    // The replacement is queued for the log so a broker restart keeps it.
    let out = c.take_outbox();
    let last_group = out
        .iter()
        .rev()
        .find_map(|r| match &r.value {
            Some(records::RecordValue::Group(g)) => Some(g.clone()),
            _ => None,
        })
        .expect("group record");
    assert!(
        last_group
            .members
            .iter()
            .any(|m| m.member_id == j.member_id)
    );
}

#[test]
fn static_member_rejoin_rebalances_only_if_the_protocol_would_change() {
    let mut c = coordinator();
    let (a, _b, generation) = static_stable_pair(&mut c);
    // New metadata for the same protocol (e.g. a cooperative consumer that owns nothing
    // after its restart): no rebalance, as on Kafka.
    let mut req = join_req("", Some("inst-b"), &["range"]);
    req.protocols = vec![("range".into(), Bytes::from("new-subscription"))];
    let j = now_reply(c.join(G, req, 8_000));
    assert_eq!(j.generation_id, generation);
    assert_eq!(state(&c), GroupState::Stable);
    // Protocols that cannot keep "range" selected: the group rebalances.
    let mut both = join_req(&a, Some("inst-a"), &["range", "roundrobin"]);
    both.protocols = protos(&["range", "roundrobin"]);
    let mut ra = later(c.join(G, both, 8_001));
    let mut rb2 = later(c.join(
        G,
        join_req(&j.member_id, Some("inst-b"), &["range", "roundrobin"]),
        8_002,
    ));
    let generation = ready(&mut ra).generation_id;
    assert_eq!(ready(&mut rb2).generation_id, generation);
    let mut roundrobin_only = join_req("", Some("inst-b"), &["roundrobin"]);
    roundrobin_only.protocols = protos(&["roundrobin"]);
    // Complete the generation first (sync), so the group is Stable again.
    let _sb = later(sync(&mut c, &j.member_id, generation, &[], 8_003));
    let a_id = c.group(G).unwrap().leader_id.clone().unwrap();
    drop(later(sync(&mut c, &a_id, generation, &[], 8_003)));
    assert_eq!(state(&c), GroupState::Stable);
    let mut rb = later(c.join(G, roundrobin_only, 8_004));
    assert_eq!(state(&c), GroupState::PreparingRebalance);
    let mut a_again = join_req(&a_id, Some("inst-a"), &["range", "roundrobin"]);
    a_again.protocols = protos(&["range", "roundrobin"]);
    let mut ra = later(c.join(G, a_again, 8_005));
    let jb = ready(&mut rb);
    assert_eq!(jb.generation_id, generation + 1);
    assert_eq!(jb.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(ready(&mut ra).generation_id, generation + 1);
}

#[test]
fn static_member_silent_past_session_timeout_is_removed() {
    let mut c = coordinator();
    let (a, _b, generation) = static_stable_pair(&mut c);
    let t = 6_100 + i64::from(SESSION_MS);
    assert_eq!(c.heartbeat(G, &a, None, generation, t), Ok(()));
    c.tick(t);
    assert_eq!(state(&c), GroupState::PreparingRebalance);
    assert_eq!(c.group(G).unwrap().member_count(), 1);
}

#[test]
fn offsets_commit_fetch_and_generation_checks() {
    let mut c = coordinator();
    let (ids, generation) = stable_group_of_three(&mut c);
    let commit = |member: &str, generation: i32, offset: i64, metadata: &str| CommitRequest {
        group_id: G.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        offsets: vec![CommitOffset {
            topic: "t".into(),
            partition: 0,
            offset,
            leader_epoch: 3,
            metadata: metadata.into(),
        }],
    };
    let membership = c.take_outbox();
    assert!(
        !membership.is_empty(),
        "the synced group is queued for the log"
    );
    let (res, ticket) = c
        .commit_offsets(commit(&ids[0], generation, 42, "m"), 8_000)
        .unwrap();
    assert_eq!(res, vec![Ok(())]);
    let mut ticket = ticket.expect("a write needs a durability ticket");
    assert!(ticket.try_recv().is_none(), "not durable before the flush");
    let out = c.take_outbox();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].partition, group_partition(G, 4));
    c.mark_durable(out[0].seq, Ok(()));
    assert_eq!(ticket.try_recv(), Some(Ok(())));

    let fetched = c.fetch_offsets(G, Some(&[("t".into(), 0), ("t".into(), 1)]));
    let v = fetched[0].2.as_ref().unwrap();
    assert_eq!(
        (
            v.offset,
            v.leader_epoch,
            v.metadata.as_str(),
            v.commit_timestamp_ms
        ),
        (42, 3, "m", 8_000)
    );
    assert!(fetched[1].2.is_none());
    assert_eq!(c.fetch_offsets(G, None).len(), 1);
    assert!(c.fetch_offsets("other", None).is_empty());

    assert_eq!(
        c.commit_offsets(commit(&ids[0], generation - 1, 1, ""), 8_000)
            .err(),
        Some(GroupError::IllegalGeneration)
    );
    assert_eq!(
        c.commit_offsets(commit("ghost", generation, 1, ""), 8_000)
            .err(),
        Some(GroupError::UnknownMemberId)
    );
    // An offsets-only commit (generation -1) is refused while the group has members...
    assert_eq!(
        c.commit_offsets(commit("", -1, 1, ""), 8_000).err(),
        Some(GroupError::UnknownMemberId)
    );
    // ...and accepted for a group with none.
    let (res, _) = c
        .commit_offsets(
            CommitRequest {
                group_id: "standalone".into(),
                ..commit("", -1, 7, "")
            },
            8_000,
        )
        .unwrap();
    assert_eq!(res, vec![Ok(())]);
    let big = "x".repeat(5000);
    let (res, ticket) = c
        .commit_offsets(commit(&ids[0], generation, 1, &big), 8_000)
        .unwrap();
    assert_eq!(res, vec![Err(GroupError::OffsetMetadataTooLarge)]);
    assert!(ticket.is_none());
    // A failed flush reaches the waiter.
    let (_, ticket) = c
        .commit_offsets(commit(&ids[0], generation, 43, ""), 8_000)
        .unwrap();
    let mut ticket = ticket.unwrap();
    let seq = c.take_outbox().last().unwrap().seq;
    c.mark_durable(seq, Err(super::coordinator::PersistFailed));
    assert!(matches!(ticket.try_recv(), Some(Err(_))));
}

#[test]
fn offsets_of_an_empty_group_expire_after_retention_then_group_goes() {
    let mut c = coordinator();
    let (ids, generation) = stable_group_of_three(&mut c);
    let offsets = vec![CommitOffset {
        topic: "t".into(),
        partition: 1,
        offset: 9,
        leader_epoch: -1,
        metadata: String::new(),
    }];
    c.commit_offsets(
        CommitRequest {
            group_id: G.into(),
            generation_id: generation,
            member_id: ids[0].clone(),
            group_instance_id: None,
            offsets,
        },
        8_000,
    )
    .unwrap();
    let all: Vec<(String, Option<String>)> = ids.iter().map(|i| (i.clone(), None)).collect();
    c.leave(G, &all, 10_000);
    assert_eq!(state(&c), GroupState::Empty);
    c.take_outbox();
    // Retention counts from when the group became empty (60 s in cfg()).
    c.tick(10_000 + 59_999);
    assert_eq!(c.fetch_offsets(G, None).len(), 1);
    c.tick(10_000 + 60_000);
    assert!(c.fetch_offsets(G, None).is_empty());
    assert!(
        c.group(G).is_none(),
        "empty group without offsets is removed"
    );
    let out = c.take_outbox();
    assert!(
        out.iter()
            .any(|r| matches!(&r.key, RecordKey::Offset { partition: 1, .. }) && r.value.is_none())
    );
    assert!(
        out.iter()
            .any(|r| matches!(&r.key, RecordKey::Group { .. }) && r.value.is_none())
    );
}

/// Writes the outbox through the record codec and replays it into a fresh coordinator,
/// as a broker restart does.
fn restart(c: &mut GroupCoordinator, now_ms: i64) -> GroupCoordinator {
    let mut log = Vec::new();
    for r in c.take_outbox() {
        log.push(records::encode(&r.key, r.value.as_ref()));
    }
    let mut fresh = GroupCoordinator::new(cfg(), 4, 0xdef);
    for (k, v) in log {
        let (key, value) = records::decode(Some(k), v).unwrap();
        fresh.replay(key, value, now_ms);
    }
    fresh.finish_load();
    fresh
}

#[test]
fn state_survives_replay_of_the_log() {
    let mut c = coordinator();
    let (ids, generation) = stable_group_of_three(&mut c);
    for (i, off) in [(0, 10), (1, 20), (0, 11)] {
        c.commit_offsets(
            CommitRequest {
                group_id: G.into(),
                generation_id: generation,
                member_id: ids[0].clone(),
                group_instance_id: None,
                offsets: vec![CommitOffset {
                    topic: "t".into(),
                    partition: i,
                    offset: off,
                    leader_epoch: 1,
                    metadata: "md".into(),
                }],
            },
            9_000,
        )
        .unwrap();
    }
    // A deleted group in the same log must stay deleted.
    c.commit_offsets(
        CommitRequest {
            group_id: "gone".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
            }],
        },
        9_000,
    )
    .unwrap();
    c.delete_group("gone", 9_500).unwrap();

    let mut r = restart(&mut c, 100_000);
    let fetched = r.fetch_offsets(G, None);
    let got: Vec<(i32, i64)> = fetched
        .iter()
        .map(|(_, p, v)| (*p, v.as_ref().unwrap().offset))
        .collect();
    assert_eq!(got, vec![(0, 11), (1, 20)], "latest value per key wins");
    assert!(r.group("gone").is_none());
    // Members come back Stable in the same generation with their assignments.
    assert_eq!(r.group(G).unwrap().state(), GroupState::Stable);
    assert_eq!(r.heartbeat(G, &ids[1], None, generation, 100_001), Ok(()));
    assert_eq!(
        r.group(G).unwrap().member(&ids[1]).unwrap().assignment,
        Bytes::from("B")
    );
    // And a member that never comes back expires after its session timeout.
    r.tick(100_000 + i64::from(SESSION_MS));
    assert_eq!(r.group(G).unwrap().state(), GroupState::PreparingRebalance);

    // A snapshot alone rebuilds the same state.
    let p = group_partition(G, 4);
    let snap = c.snapshot_records(p);
    let mut s = GroupCoordinator::new(cfg(), 4, 1);
    for (k, v) in snap {
        s.replay(k, v, 100_000);
    }
    s.finish_load();
    assert_eq!(s.fetch_offsets(G, None), c.fetch_offsets(G, None));
    assert_eq!(s.describe_group(G), c.describe_group(G));
}

#[test]
fn delete_group_and_offset_delete_rules() {
    let mut c = coordinator();
    let (ids, generation) = stable_group_of_three(&mut c);
    assert_eq!(
        c.delete_group(G, 8_000).err(),
        Some(GroupError::NonEmptyGroup)
    );
    assert_eq!(
        c.delete_group("nope", 8_000).err(),
        Some(GroupError::GroupIdNotFound)
    );
    c.commit_offsets(
        CommitRequest {
            group_id: G.into(),
            generation_id: generation,
            member_id: ids[0].clone(),
            group_instance_id: None,
            offsets: ["t", "other"]
                .iter()
                .map(|t| CommitOffset {
                    topic: t.to_string(),
                    partition: 0,
                    offset: 5,
                    leader_epoch: -1,
                    metadata: String::new(),
                })
                .collect(),
        },
        8_000,
    )
    .unwrap();
    // Members' metadata is not a consumer subscription here, so a non-empty group refuses.
    assert_eq!(
        c.delete_offsets(G, &[("t".into(), 0)]).err(),
        Some(GroupError::NonEmptyGroup)
    );
    let all: Vec<(String, Option<String>)> = ids.iter().map(|i| (i.clone(), None)).collect();
    c.leave(G, &all, 9_000);
    let (res, _) = c.delete_offsets(G, &[("other".into(), 0)]).unwrap();
    assert_eq!(res, vec![Ok(())]);
    assert_eq!(c.fetch_offsets(G, None).len(), 1);
    assert!(c.delete_group(G, 10_000).is_ok());
    assert!(c.group(G).is_none());
    assert!(c.list_groups(&[], &[]).is_empty());
}

#[test]
fn offset_delete_refuses_subscribed_topics() {
    let mut c = GroupCoordinator::new(
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..cfg()
        },
        1,
        1,
    );
    // ConsumerProtocolSubscription v0 subscribed to "t".
    let sub = Bytes::from_static(b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff");
    let mut req = join_req("", None, &["range"]);
    req.protocols = vec![("range".into(), sub)];
    req.require_known_member_id = false;
    let mut r = later(c.join(G, req, 0));
    let j = ready(&mut r);
    drop(later(sync(
        &mut c,
        &j.member_id,
        j.generation_id,
        &[(&j.member_id, "")],
        1,
    )));
    let (res, _) = c
        .delete_offsets(G, &[("t".into(), 0), ("u".into(), 0)])
        .unwrap();
    assert_eq!(res, vec![Err(GroupError::GroupSubscribedToTopic), Ok(())]);
}

#[test]
fn list_groups_filters_by_state_and_type() {
    let mut c = coordinator();
    stable_group_of_three(&mut c);
    c.commit_offsets(
        CommitRequest {
            group_id: "standalone".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
            }],
        },
        0,
    )
    .unwrap();
    let all = c.list_groups(&[], &[]);
    assert_eq!(all.len(), 2);
    let stable = c.list_groups(&[GroupState::Stable], &[]);
    assert_eq!(stable.len(), 1);
    assert_eq!(stable[0].group_id, G);
    assert_eq!(stable[0].protocol_type, "consumer");
    let empty = c.list_groups(&[GroupState::Empty], &[]);
    assert_eq!(empty[0].group_id, "standalone");
    assert!(c.list_groups(&[], &["connect".into()]).is_empty());
    assert_eq!(GroupState::parse("stable"), Some(GroupState::Stable));
    let d = c.describe_group(G);
    assert_eq!(d.members.len(), 3);
    assert!(d.members.iter().any(|m| m.assignment == "B"));
    assert!(!c.describe_group("missing").exists);
}

#[test]
fn group_partition_matches_kafka() {
    // Java: "abc".hashCode() == 96354; Kafka: abs(hash) % 50.
    assert_eq!(group_partition("abc", 50), 96354 % 50);
    // Negative Java hashes use abs: "polygenelubricants".hashCode() == Integer.MIN_VALUE.
    assert_eq!(group_partition("polygenelubricants", 50), 0);
    assert_eq!(group_partition("anything", 1), 0);
}

#[test]
fn a_pending_member_id_lapses_after_the_session_timeout() {
    let mut c = coordinator();
    let first = now_reply(c.join(G, join_req("", None, &["range"]), 0));
    assert_eq!(first.error, Some(GroupError::MemberIdRequired));
    c.tick(1_000);
    assert!(
        c.group(G).is_some(),
        "group kept while a member id is pending"
    );
    c.tick(i64::from(SESSION_MS) + 1);
    assert!(c.group(G).is_none());
    let r = now_reply(c.join(G, join_req(&first.member_id, None, &["range"]), 20_000));
    assert_eq!(r.error, Some(GroupError::UnknownMemberId));
}

#[test]
fn offsets_of_deleted_partitions_are_dropped_with_tombstones() {
    let mut c = coordinator();
    let offsets = ["kept", "deleted"]
        .iter()
        .map(|t| CommitOffset {
            topic: t.to_string(),
            partition: 0,
            offset: 3,
            leader_epoch: -1,
            metadata: String::new(),
        })
        .collect();
    c.commit_offsets(
        CommitRequest {
            group_id: G.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            offsets,
        },
        0,
    )
    .unwrap();
    c.take_outbox();
    c.drop_offsets_of_missing_partitions(|t, _| t == "kept");
    let left: Vec<String> = c
        .fetch_offsets(G, None)
        .into_iter()
        .map(|(t, _, _)| t)
        .collect();
    assert_eq!(left, vec!["kept".to_string()]);
    let out = c.take_outbox();
    assert_eq!(out.len(), 1);
    assert!(matches!(&out[0].key, RecordKey::Offset { topic, .. } if topic == "deleted"));
    assert!(out[0].value.is_none());
}
