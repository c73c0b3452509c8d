//! Scenario tests of one protocol rule each, over a perfect in-memory network.

use super::*;
use std::collections::VecDeque;

/// Peers over a lossless FIFO network; disks fsync when the test says so.
struct Cluster {
    peers: Vec<Peer>,
    queue: VecDeque<(PeerId, Envelope)>,
    /// Messages sent so far, for assertions.
    sent: Vec<(PeerId, Envelope)>,
    applied: Vec<Vec<Zxid>>,
    auto_persist: bool,
    touches: Vec<(PeerId, Payload)>,
    /// Per peer: SYNC answers released to the driver, REVALIDATE questions and answers.
    syncs_answered: Vec<usize>,
    revalidations: Vec<Revalidation>,
    revalidated: Vec<(PeerId, i64, bool)>,
    /// Every `Ready::snapshot_wanted`, with the peer that asked.
    snapshots_wanted: Vec<(PeerId, Zxid)>,
}

impl Cluster {
    fn new(voters: u64, durables: Vec<Durable>) -> Cluster {
        Cluster::configured(voters, durables, |_| {})
    }

    fn configured(voters: u64, durables: Vec<Durable>, adjust: impl Fn(&mut Config)) -> Cluster {
        let ids: Vec<PeerId> = (1..=voters).collect();
        let config = |id: PeerId| {
            let mut config = Config::new(id, ids.clone(), vec![]);
            adjust(&mut config);
            config
        };
        let peers: Vec<Peer> = ids
            .iter()
            .zip(durables)
            .map(|(id, durable)| Peer::new(config(*id), durable, *id))
            .map(|peer| peer.expect("valid config"))
            .collect();
        Cluster::with_peers(peers)
    }

    fn with_peers(peers: Vec<Peer>) -> Cluster {
        let count = peers.len();
        let mut cluster = Cluster {
            peers,
            queue: VecDeque::new(),
            sent: vec![],
            applied: vec![vec![]; count],
            auto_persist: true,
            touches: vec![],
            syncs_answered: vec![0; count],
            revalidations: vec![],
            revalidated: vec![],
            snapshots_wanted: vec![],
        };
        cluster.drain_all();
        cluster
    }

    fn fresh(voters: u64) -> Cluster {
        Cluster::new(voters, (0..voters).map(|_| Durable::empty()).collect())
    }

    fn peer(&mut self, id: PeerId) -> &mut Peer {
        &mut self.peers[id as usize - 1]
    }

    fn drain(&mut self, index: usize) {
        let ready = self.peers[index].take_ready();
        let from = self.peers[index].id();
        let last_append = ready.disk.iter().rev().find_map(|op| match op {
            DiskOp::Append(entry) => Some(entry.zxid),
            _ => None,
        });
        self.touches.extend(ready.session_touches);
        self.syncs_answered[index] += ready.syncs_answered;
        self.revalidations.extend(ready.revalidations);
        let revalidated = ready
            .revalidated
            .iter()
            .map(|(id, valid)| (from, *id, *valid));
        self.revalidated.extend(revalidated);
        if let Some(zxid) = ready.snapshot_wanted {
            self.snapshots_wanted.push((from, zxid));
        }
        for apply in ready.committed {
            if let Apply::Entry(entry) = apply {
                self.applied[index].push(entry.zxid);
            }
        }
        for envelope in ready.messages {
            self.sent.push((from, envelope.clone()));
            self.queue.push_back((from, envelope));
        }
        if let (true, Some(zxid)) = (self.auto_persist, last_append) {
            self.peers[index].on_persisted(zxid);
            self.drain(index);
        }
    }

    fn drain_all(&mut self) {
        for index in 0..self.peers.len() {
            self.drain(index);
        }
    }

    /// Delivers until the network is empty, ticking when it is, at most `ticks` ticks.
    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for _ in 0..10_000 {
                let Some((from, envelope)) = self.queue.pop_front() else {
                    break;
                };
                let index = envelope.to as usize - 1;
                self.peers[index].step(from, envelope.message);
                self.drain(index);
            }
            for index in 0..self.peers.len() {
                self.peers[index].tick();
                self.drain(index);
                self.peers[index].invariants();
            }
        }
    }

    fn leader(&self) -> Option<PeerId> {
        let serving = |p: &&Peer| p.role() == Role::Leading { serving: true };
        self.peers.iter().find(serving).map(Peer::id)
    }
}

fn entry(epoch: u32, counter: u32) -> Entry {
    Entry {
        zxid: Zxid::new(epoch, counter),
        payload: Payload::from(vec![counter as u8]),
    }
}

fn durable(current_epoch: u32, log: Vec<Entry>) -> Durable {
    Durable {
        accepted_epoch: current_epoch,
        current_epoch,
        snapshot: Snapshot::empty(),
        log,
    }
}

#[test]
fn votes_order_by_epoch_then_zxid_then_id() {
    // totalOrderPredicate: the epoch wins over the zxid, the zxid over the server id.
    let vote = |leader, epoch, counter| Vote {
        leader,
        zxid: Zxid::new(epoch, counter),
        peer_epoch: epoch,
    };
    assert!(vote(1, 2, 0).beats(&vote(9, 1, 99)));
    assert!(vote(1, 1, 5).beats(&vote(9, 1, 4)));
    assert!(vote(9, 1, 4).beats(&vote(1, 1, 4)));
    assert!(!vote(1, 1, 4).beats(&vote(1, 1, 4)));
}

#[test]
fn zxid_packs_epoch_and_counter() {
    // zxid = epoch << 32 | counter, as ZooKeeper writes it.
    let zxid = Zxid::new(3, 7);
    assert_eq!(zxid.0, 0x0000_0003_0000_0007);
    assert_eq!((zxid.epoch(), zxid.counter()), (3, 7));
}

#[test]
fn config_validation_names_the_problem() {
    // Operator mistakes are errors, not panics.
    assert_eq!(
        Config::new(4, vec![1, 2, 3], vec![]).validate(),
        Err(ConfigError::NotAMember(4))
    );
    assert_eq!(
        Config::new(1, vec![2, 1], vec![]).validate(),
        Err(ConfigError::BadMembership)
    );
    let mut config = Config::new(1, vec![1, 2, 3], vec![]);
    config.ping_interval_ticks = config.sync_limit_ticks;
    assert_eq!(config.validate(), Err(ConfigError::PingTooSlow));
}

#[test]
fn fresh_ensemble_elects_the_highest_id_and_commits() {
    // With equal (empty) histories the highest id wins; a proposal commits everywhere.
    let mut cluster = Cluster::fresh(3);
    cluster.run(30);
    assert_eq!(cluster.leader(), Some(3));
    let zxid = match cluster.peer(3).propose(Payload::from(vec![1])) {
        Ok(Proposed::Local(zxid)) => zxid,
        other => panic!("propose failed: {other:?}"),
    };
    cluster.drain(2);
    cluster.run(5);
    assert_eq!(zxid, Zxid::new(1, 1));
    for applied in &cluster.applied {
        assert_eq!(applied, &vec![zxid]);
    }
}

#[test]
fn most_recent_history_wins_the_election() {
    // Server 1 has the longest log of the newest epoch, so it leads despite its low id.
    let long = vec![entry(1, 1), entry(1, 2), entry(1, 3)];
    let short = vec![entry(1, 1)];
    let mut cluster = Cluster::new(
        3,
        vec![
            durable(1, long),
            durable(1, short.clone()),
            durable(1, short),
        ],
    );
    cluster.run(30);
    assert_eq!(cluster.leader(), Some(1));
    // Its whole history is committed in the new epoch, on every server.
    for applied in &cluster.applied {
        assert_eq!(applied.len(), 3);
    }
}

#[test]
fn follower_acks_only_after_its_fsync() {
    // No ACK for a proposal leaves a follower before on_persisted covers it.
    let mut cluster = Cluster::fresh(3);
    cluster.run(30);
    cluster.auto_persist = false;
    cluster.sent.clear();
    let _ = cluster.peer(3).propose(Payload::from(vec![1]));
    cluster.drain(2);
    cluster.run(1);
    let acks = |cluster: &Cluster| {
        cluster
            .sent
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e.message,
                    Message::Quorum {
                        packet: Packet::Ack { .. },
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(acks(&cluster), 0);
    assert_eq!(cluster.peer(3).commit_zxid(), Zxid::ZERO);
    cluster.peer(1).on_persisted(Zxid::new(1, 1));
    cluster.drain(0);
    assert_eq!(acks(&cluster), 1);
}

#[test]
fn leader_truncates_a_follower_with_an_uncommitted_tail() {
    // Server 3 logged (1,3) that nobody else has; the new leader sends TRUNC to (1,2).
    let common = vec![entry(1, 1), entry(1, 2)];
    let mut diverged = common.clone();
    diverged.push(Entry {
        zxid: Zxid::new(1, 3),
        payload: Payload::from(vec![99]),
    });
    let mut tail = common.clone();
    tail.push(Entry {
        zxid: Zxid::new(2, 1),
        payload: Payload::from(vec![7]),
    });
    let durables = vec![durable(1, common), durable(2, tail), durable(1, diverged)];
    let mut cluster = Cluster::new(3, durables);
    cluster.run(30);
    assert_eq!(cluster.leader(), Some(2));
    let truncs: Vec<Zxid> = cluster
        .sent
        .iter()
        .filter_map(|(_, e)| match &e.message {
            Message::Quorum {
                packet: Packet::Trunc { zxid },
                ..
            } if e.to == 3 => Some(*zxid),
            _ => None,
        })
        .collect();
    assert_eq!(truncs, vec![Zxid::new(1, 2)]);
    assert_eq!(cluster.peer(3).last_zxid(), Zxid::new(2, 1));
}

#[test]
fn zxid_counter_rollover_forces_a_new_epoch() {
    // When the counter runs out the leader steps down; the next leader uses a new epoch.
    let ids = vec![1, 2, 3];
    let mut peers = Vec::new();
    for id in &ids {
        let mut config = Config::new(*id, ids.clone(), vec![]);
        config.zxid_counter_max = 2;
        peers.push(Peer::new(config, Durable::empty(), *id).expect("valid config"));
    }
    let mut cluster = Cluster::with_peers(peers);
    cluster.run(30);
    for _ in 0..2 {
        assert!(cluster.peer(3).propose(Payload::from(vec![1])).is_ok());
        cluster.drain(2);
    }
    assert_eq!(
        cluster.peer(3).propose(Payload::from(vec![1])),
        Err(ProposeError::EpochExhausted)
    );
    cluster.drain(2);
    cluster.run(60);
    let leader = cluster.leader().expect("a new leader");
    assert_eq!(cluster.peer(leader).leader_epoch(), Some(2));
    assert_eq!(cluster.applied[0], vec![Zxid::new(1, 1), Zxid::new(1, 2)]);
}

#[test]
fn ping_replies_carry_session_touches_to_the_leader() {
    // The driver's payload rides on the follower's next PING reply and reaches the leader's
    // Ready, tagged with the follower's id.
    let mut cluster = Cluster::fresh(3);
    cluster.run(30);
    cluster.peer(1).set_ping_reply(Payload::from(vec![5, 6]));
    cluster.run(10);
    assert_eq!(cluster.touches, vec![(1, Payload::from(vec![5, 6]))]);
    // Two reports before one PING both arrive, in order.
    cluster.touches.clear();
    cluster.peer(1).append_ping_reply(&[1, 2]);
    cluster.peer(1).append_ping_reply(&[3]);
    cluster.run(10);
    assert_eq!(cluster.touches, vec![(1, Payload::from(vec![1, 2, 3]))]);
}

/// Makes a lone peer follow `leader` by telling it a quorum already does.
fn follow(peer: &mut Peer, leader: PeerId, other: PeerId) -> Link {
    let vote = Vote {
        leader,
        zxid: Zxid::ZERO,
        peer_epoch: 0,
    };
    let round = 1;
    let leading = Notification {
        state: ServerState::Leading,
        vote,
        round,
    };
    let following = Notification {
        state: ServerState::Following,
        vote,
        round,
    };
    peer.step(leader, Message::Notification(leading));
    peer.step(other, Message::Notification(following));
    let ready = peer.take_ready();
    let info = ready.messages.iter().find_map(|e| match &e.message {
        Message::Quorum {
            link,
            packet: Packet::FollowerInfo { .. },
        } => Some(*link),
        _ => None,
    });
    info.expect("FOLLOWERINFO sent")
}

fn ack_epoch_after_leader_info(peer: &mut Peer, link: Link, epoch: u32) -> Option<u32> {
    let link = Link {
        session: 77,
        ..link
    };
    peer.step(
        3,
        Message::Quorum {
            link,
            packet: Packet::LeaderInfo { epoch },
        },
    );
    let ready = peer.take_ready();
    let acks: Vec<Option<u32>> = ready
        .messages
        .iter()
        .filter_map(|e| match &e.message {
            Message::Quorum {
                packet: Packet::AckEpoch { current_epoch, .. },
                ..
            } => Some(*current_epoch),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 1, "one ACKEPOCH");
    acks[0]
}

#[test]
fn an_epoch_is_acked_for_the_quorum_only_once() {
    // A learner that accepted epoch 5 and meets a leader offering 5 again (a second
    // connection, maybe another leader) answers ACKEPOCH with -1, so that no two leaders can
    // both count it towards a quorum for the same epoch.
    let config = Config::new(2, vec![1, 2, 3], vec![]);
    let mut peer = Peer::new(config, Durable::empty(), 9).expect("valid config");
    let _ = peer.take_ready();
    let link = follow(&mut peer, 3, 1);
    assert_eq!(ack_epoch_after_leader_info(&mut peer, link, 5), Some(0));
    assert_eq!(peer.accepted_epoch(), 5);
    for _ in 0..=peer.config.init_limit_ticks {
        peer.tick(); // The leader goes silent: back to LOOKING.
    }
    assert_eq!(peer.role(), Role::Looking);
    let _ = peer.take_ready();
    let link = follow(&mut peer, 3, 1);
    assert_eq!(ack_epoch_after_leader_info(&mut peer, link, 5), None);
}

/// The quorum packets `from` sent `to` so far, in order.
fn packets(cluster: &Cluster, from: PeerId, to: PeerId) -> Vec<Packet> {
    cluster
        .sent
        .iter()
        .filter(|(sender, envelope)| *sender == from && envelope.to == to)
        .filter_map(|(_, envelope)| match &envelope.message {
            Message::Quorum { packet, .. } => Some(packet.clone()),
            Message::Notification(_) => None,
        })
        .collect()
}

#[test]
fn a_learner_sync_with_nothing_outstanding_is_answered_at_once() {
    // Leader.processSync: no outstanding proposal, so SYNC goes back at once, no zxid used.
    let mut cluster = Cluster::fresh(3);
    cluster.run(30);
    assert_eq!(cluster.leader(), Some(3));
    let last = cluster.peer(3).last_zxid();
    cluster.sent.clear();
    cluster.peer(3).sync_learner(1).expect("a serving follower");
    assert_eq!(cluster.peer(3).pending_syncs(), Some(0));
    cluster.drain(2);
    assert_eq!(packets(&cluster, 3, 1), vec![Packet::Sync]);
    cluster.run(2);
    assert_eq!(cluster.syncs_answered, vec![1, 0, 0]);
    assert_eq!(cluster.peer(3).last_zxid(), last, "a sync proposes nothing");
    assert_eq!(
        cluster.peer(1).pending_syncs(),
        None,
        "only a leader counts syncs"
    );
}

#[test]
fn a_learner_sync_waits_for_the_outstanding_proposals_to_commit() {
    // The sync waits for the last proposal outstanding when it came; SYNC follows that
    // proposal's COMMIT on the learner's connection, and the learner answers it only after
    // applying the commit.
    let mut cluster = Cluster::fresh(3);
    cluster.run(30);
    cluster.auto_persist = false;
    let zxid = match cluster.peer(3).propose(Payload::from(vec![7])) {
        Ok(Proposed::Local(zxid)) => zxid,
        other => panic!("propose failed: {other:?}"),
    };
    cluster.sent.clear();
    cluster.peer(3).sync_learner(1).expect("a serving follower");
    assert_eq!(cluster.peer(3).pending_syncs(), Some(1));
    cluster.drain(2);
    // Deliver the PROPOSALs, nobody fsyncs: no COMMIT, so no SYNC.
    cluster.run(1);
    let to_learner = packets(&cluster, 3, 1);
    assert!(
        !to_learner.contains(&Packet::Sync),
        "answered before the commit"
    );
    assert_eq!(cluster.syncs_answered, vec![0, 0, 0]);
    // Learner 2 and the leader fsync: a quorum, so the proposal commits.
    for id in [3, 2] {
        cluster.peer(id).on_persisted(zxid);
        cluster.drain(id as usize - 1);
    }
    cluster.run(1);
    assert_eq!(cluster.peer(3).pending_syncs(), Some(0));
    let to_learner = packets(&cluster, 3, 1);
    let commit = to_learner
        .iter()
        .position(|p| *p == Packet::Commit { zxid });
    let sync = to_learner.iter().position(|p| *p == Packet::Sync);
    assert!(
        commit.is_some() && sync > commit,
        "SYNC after COMMIT: {to_learner:?}"
    );
    // Learner 1 got the COMMIT but has not made the proposal durable: nothing applied, so
    // the SYNC waits.
    assert_eq!(cluster.syncs_answered[0], 0);
    cluster.peer(1).on_persisted(zxid);
    cluster.drain(0);
    assert_eq!(cluster.applied[0], vec![zxid]);
    assert_eq!(cluster.syncs_answered[0], 1);
}

#[test]
fn revalidate_goes_to_the_leader_and_its_answer_comes_back() {
    // REVALIDATE from a follower reaches the leader's driver; its answer reaches the follower.
    let mut cluster = Cluster::fresh(3);
    cluster.run(30);
    cluster.peer(1).revalidate(0x77, 4000).expect("serving");
    cluster.drain(0);
    cluster.run(1);
    let asked = Revalidation {
        from: 1,
        session_id: 0x77,
        timeout_ms: 4000,
    };
    assert_eq!(cluster.revalidations, vec![asked]);
    cluster
        .peer(3)
        .answer_revalidation(1, 0x77, true)
        .expect("known learner");
    cluster.drain(2);
    cluster.run(1);
    assert_eq!(cluster.revalidated, vec![(1, 0x77, true)]);
    assert!(cluster.peer(3).answer_revalidation(9, 1, true).is_err());
}

#[test]
fn a_late_revalidation_answer_does_not_reach_the_learners_next_connection() {
    // Follower 1 asks about a session, restarts (a new connection) and asks again. The
    // driver's answer to the first ask comes late: it must not reach the new connection,
    // where it would answer the second ask; the second ask's own answer does.
    let mut cluster = Cluster::fresh(3);
    cluster.run(30);
    cluster.peer(1).revalidate(0x77, 4000).expect("serving");
    cluster.drain(0);
    cluster.run(1);
    let config = Config::new(1, vec![1, 2, 3], vec![]);
    cluster.peers[0] = Peer::new(config, Durable::empty(), 99).expect("valid config");
    cluster.drain(0);
    cluster.run(30);
    cluster
        .peer(1)
        .revalidate(0x77, 4000)
        .expect("serving again");
    cluster.drain(0);
    cluster.run(1);
    assert_eq!(
        cluster.revalidations.len(),
        2,
        "both asks reached the driver"
    );
    let late = cluster.peer(3).answer_revalidation(1, 0x77, false);
    assert_eq!(late, Err(ProposeError::UnknownLearner(1)));
    cluster
        .peer(3)
        .answer_revalidation(1, 0x77, true)
        .expect("the second ask's connection");
    cluster.drain(2);
    cluster.run(1);
    assert_eq!(cluster.revalidated, vec![(1, 0x77, true)]);
}

/// A 3-server ensemble led by server 3 with six entries committed and compacted at (1,2),
/// in which server 1 restarts with nothing: it needs a SNAP, and the log after the leader's
/// snapshot (four entries) is longer than `snap_tail_entries_min`.
fn cluster_with_a_learner_behind_the_snapshot() -> Cluster {
    let mut cluster = Cluster::configured(3, (0..3).map(|_| Durable::empty()).collect(), |c| {
        c.snap_tail_entries_min = 2;
    });
    cluster.run(30);
    assert_eq!(cluster.leader(), Some(3));
    for value in 1..=6u8 {
        let _ = cluster.peer(3).propose(Payload::from(vec![value]));
        cluster.drain(2);
    }
    cluster.run(5);
    assert_eq!(cluster.peer(3).commit_zxid(), Zxid::new(1, 6));
    cluster.peer(3).compact(Snapshot {
        zxid: Zxid::new(1, 2),
        data: Payload::from(b"state at (1,2)".to_vec()).into(),
    });
    let mut config = Config::new(1, vec![1, 2, 3], vec![]);
    config.snap_tail_entries_min = 2;
    cluster.peers[0] = Peer::new(config, Durable::empty(), 11).expect("valid config");
    cluster.sent.clear();
    cluster.applied[0].clear();
    cluster.drain(0);
    cluster
}

fn snaps_to(cluster: &Cluster, to: PeerId) -> Vec<Zxid> {
    cluster
        .sent
        .iter()
        .filter_map(|(_, e)| match &e.message {
            Message::Quorum {
                packet: Packet::Snap { snapshot },
                ..
            } if e.to == to => Some(snapshot.zxid),
            _ => None,
        })
        .collect()
}

#[test]
fn a_long_tail_puts_the_snap_off_until_a_fresh_snapshot_is_offered() {
    let mut cluster = cluster_with_a_learner_behind_the_snapshot();
    cluster.run(3);
    // The leader asked for a snapshot newer than its (1,2) and sent no SNAP meanwhile.
    assert_eq!(cluster.snapshots_wanted, vec![(3, Zxid::new(1, 2))]);
    assert_eq!(snaps_to(&cluster, 1), vec![]);
    // One no newer than what it holds does not end the wait.
    cluster.peer(3).offer_snapshot(&Snapshot {
        zxid: Zxid::new(1, 2),
        data: Payload::from(b"state at (1,2)".to_vec()).into(),
    });
    cluster.drain(2);
    assert_eq!(snaps_to(&cluster, 1), vec![]);
    // A fresh one is sent at once, with the log after it; the learner then serves.
    cluster.peer(3).offer_snapshot(&Snapshot {
        zxid: Zxid::new(1, 5),
        data: Payload::from(b"state at (1,5)".to_vec()).into(),
    });
    cluster.drain(2);
    cluster.run(5);
    assert_eq!(snaps_to(&cluster, 1), vec![Zxid::new(1, 5)]);
    assert_eq!(cluster.applied[0], vec![Zxid::new(1, 6)]);
    assert_eq!(
        cluster.peer(1).role(),
        Role::Following {
            leader: 3,
            serving: true
        }
    );
    // The offered snapshot serves later SNAPs too: no second request.
    assert_eq!(cluster.snapshots_wanted.len(), 1);
}

#[test]
fn a_fresh_snapshot_that_never_comes_ends_the_wait_with_the_old_one() {
    let mut cluster = cluster_with_a_learner_behind_the_snapshot();
    let wait_ticks = Config::new(3, vec![1, 2, 3], vec![]).snapshot_wait_ticks;
    cluster.run(wait_ticks - 1);
    assert_eq!(cluster.snapshots_wanted.len(), 1);
    assert_eq!(snaps_to(&cluster, 1), vec![]);
    cluster.run(3);
    assert_eq!(snaps_to(&cluster, 1), vec![Zxid::new(1, 2)]);
    assert_eq!(
        cluster.applied[0],
        vec![
            Zxid::new(1, 3),
            Zxid::new(1, 4),
            Zxid::new(1, 5),
            Zxid::new(1, 6)
        ]
    );
    // It waited once: a compaction later does not sync it again.
    assert_eq!(cluster.snapshots_wanted.len(), 1);
}

/// The notifications `from` sent `to` since `since` (an index into `Cluster::sent`).
fn votes_sent(cluster: &Cluster, since: usize, from: PeerId, to: PeerId) -> Vec<Notification> {
    cluster.sent[since..]
        .iter()
        .filter(|(sender, envelope)| *sender == from && envelope.to == to)
        .filter_map(|(_, envelope)| match &envelope.message {
            Message::Notification(n) => Some(*n),
            Message::Quorum { .. } => None,
        })
        .collect()
}

#[test]
fn a_worse_vote_of_the_same_round_is_answered_at_once() {
    // Server 1 may have answered server 2's first vote while it still followed a leader it
    // had not seen die, and then started the round with its own vote: server 2 tells it
    // its better vote again at once, not on its resend (~150 ms of a fail-over).
    let mut cluster = Cluster::fresh(3);
    let first = votes_sent(&cluster, 0, 1, 2);
    let own_vote_of_1 = *first.first().expect("server 1's first vote");
    assert_eq!(own_vote_of_1.vote.leader, 1);
    let since = cluster.sent.len();
    cluster
        .peer(2)
        .step(1, Message::Notification(own_vote_of_1));
    cluster.drain(1);
    let answers = votes_sent(&cluster, since, 2, 1);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].vote.leader, 2);
    assert_eq!(answers[0].round, own_vote_of_1.round);
    // A vote equal to its own is not answered: the exchange ends once both agree.
    let agreeing = Notification {
        vote: answers[0].vote,
        ..own_vote_of_1
    };
    let since = cluster.sent.len();
    cluster.peer(2).step(1, Message::Notification(agreeing));
    cluster.drain(1);
    assert_eq!(votes_sent(&cluster, since, 2, 1), Vec::new());
}
