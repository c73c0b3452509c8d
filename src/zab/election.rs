//! election: ZooKeeper's FastLeaderElection (`FastLeaderElection.lookForLeader`) on ticks.
//!
//! Owns: the logical clock (election round), this server's current proposal, the votes
//! received this round (`recvset`) and the votes of servers already out of the election
//! (`outofelection`), the finalize wait and the resend backoff.
//! Must not: send anything itself; it answers with an [`Action`] the peer carries out.
//! Invariants: a vote for a non-voter never beats a vote for a voter; a decision needs a
//! quorum of voters agreeing on one vote.

use super::rng::SplitMix64;
use super::{Config, Notification, PeerId, ServerState, Vote};
use std::collections::BTreeMap;

/// What the peer must do after the election saw an input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Action {
    /// Send our proposal to every voter.
    pub(crate) broadcast: bool,
    /// Send our proposal back to the sender only.
    pub(crate) reply: bool,
    /// The election is over: follow (or lead) this vote.
    pub(crate) decided: Option<Vote>,
}

#[derive(Debug, Clone)]
pub(crate) struct Election {
    pub(crate) round: u64,
    pub(crate) proposal: Vote,
    /// The vote this server would make for itself, recomputed at each `start`.
    own_vote: Vote,
    received: BTreeMap<PeerId, Vote>,
    out_of_election: BTreeMap<PeerId, Notification>,
    finalize_at_tick: Option<u64>,
    resend_at_tick: u64,
    timeout_ticks: u64,
}

impl Election {
    pub(crate) fn new(own_vote: Vote) -> Election {
        Election {
            round: 0,
            proposal: own_vote,
            own_vote,
            received: BTreeMap::new(),
            out_of_election: BTreeMap::new(),
            finalize_at_tick: None,
            resend_at_tick: 0,
            timeout_ticks: 0,
        }
    }

    /// Starts a new round voting for ourselves; the caller broadcasts the proposal.
    pub(crate) fn start(&mut self, config: &Config, own_vote: Vote, now_ticks: u64) {
        self.round += 1;
        self.own_vote = own_vote;
        self.proposal = own_vote;
        self.received.clear();
        self.out_of_election.clear();
        self.finalize_at_tick = None;
        self.timeout_ticks = config.election_timeout_ticks;
        self.resend_at_tick = now_ticks + self.timeout_ticks;
        self.note_own_proposal(config);
    }

    fn note_own_proposal(&mut self, config: &Config) {
        if config.is_voter(config.id) {
            self.received.insert(config.id, self.proposal);
        }
    }

    /// `totalOrderPredicate` plus ZooKeeper's weight rule: non-voters never win.
    fn better(config: &Config, candidate: &Vote, current: &Vote) -> bool {
        if !config.is_voter(candidate.leader) {
            return false;
        }
        !config.is_voter(current.leader) || candidate.beats(current)
    }

    pub(crate) fn on_notification(
        &mut self,
        config: &Config,
        from: PeerId,
        n: &Notification,
        now_ticks: u64,
    ) -> Action {
        if !config.is_voter(from) {
            // An observer asks who leads: answer, never count it.
            return Action {
                reply: true,
                ..Action::default()
            };
        }
        match n.state {
            ServerState::Looking => self.on_looking(config, from, n, now_ticks),
            ServerState::Following | ServerState::Leading => self.on_decided(config, from, n),
            ServerState::Observing => Action::default(),
        }
    }

    fn on_looking(&mut self, config: &Config, from: PeerId, n: &Notification, now: u64) -> Action {
        let mut action = Action::default();
        if n.round > self.round {
            self.round = n.round;
            self.received.clear();
            self.proposal = if Self::better(config, &n.vote, &self.own_vote) {
                n.vote
            } else {
                self.own_vote
            };
            self.finalize_at_tick = None;
            self.note_own_proposal(config);
            action.broadcast = true;
        } else if n.round < self.round {
            action.reply = true;
            return action;
        } else if Self::better(config, &n.vote, &self.proposal) {
            self.proposal = n.vote;
            self.finalize_at_tick = None;
            self.note_own_proposal(config);
            action.broadcast = true;
        } else if n.vote != self.proposal {
            // A worse vote of our round: its sender may have missed ours (one answered
            // while it was still following a leader it had not seen die yet, then forgot
            // as it started this round). Telling it again now saves it our resend:
            // ZooKeeper answers only older rounds, and waits for the resend here (a
            // fail-over took ~350 ms that way against ~160 ms). A sender that has ours
            // adopts it, and then agrees: no more answers.
            action.reply = true;
        }
        self.received.insert(from, n.vote);
        if self.finalize_at_tick.is_none() && self.quorum_agrees(config, &self.proposal) {
            self.finalize_at_tick = Some(now + config.finalize_wait_ticks);
        }
        action
    }

    fn on_decided(&mut self, config: &Config, from: PeerId, n: &Notification) -> Action {
        let mut action = Action::default();
        self.out_of_election.insert(from, *n);
        if n.round == self.round {
            self.received.insert(from, n.vote);
            if self.quorum_agrees(config, &n.vote) && self.leader_is_up(config, n) {
                action.decided = Some(n.vote);
                return action;
            }
        }
        let agreeing = self
            .out_of_election
            .iter()
            .filter(|(id, o)| config.is_voter(**id) && o.vote == n.vote && o.round == n.round)
            .count();
        if agreeing >= config.quorum() && self.leader_is_up(config, n) {
            self.round = n.round;
            action.decided = Some(n.vote);
        }
        action
    }

    /// ZooKeeper's `checkLeader`: someone else must have told us it leads; we may only lead
    /// ourselves from the round we are in.
    fn leader_is_up(&self, config: &Config, n: &Notification) -> bool {
        if n.vote.leader == config.id {
            return n.round == self.round;
        }
        self.out_of_election
            .get(&n.vote.leader)
            .is_some_and(|o| o.state == ServerState::Leading)
    }

    fn quorum_agrees(&self, config: &Config, vote: &Vote) -> bool {
        let agreeing = self
            .received
            .iter()
            .filter(|(id, v)| config.is_voter(**id) && **v == *vote)
            .count();
        agreeing >= config.quorum()
    }

    pub(crate) fn on_tick(&mut self, config: &Config, now: u64, rng: &mut SplitMix64) -> Action {
        let mut action = Action::default();
        if let Some(at) = self.finalize_at_tick {
            if now >= at && self.quorum_agrees(config, &self.proposal) {
                action.decided = Some(self.proposal);
                return action;
            }
            if now >= at {
                self.finalize_at_tick = None;
            }
        }
        if now >= self.resend_at_tick {
            action.broadcast = true;
            self.timeout_ticks = (self.timeout_ticks * 2).min(config.election_timeout_ticks_max);
            let jitter = rng.below(config.election_jitter_ticks + 1);
            self.resend_at_tick = now + self.timeout_ticks + jitter;
        }
        action
    }
}
