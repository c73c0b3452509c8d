//! Write results into reply frames. Which requests become replica-core work, and what work,
//! is `replica::forward::to_replica` (re-exported here): a leader maps a learner's forwarded
//! request with the same function.

use crate::proto::jute::Writer;
use crate::proto::records::{self, MultiOp, Request};
use crate::proto::{op, ErrorCode};
pub use crate::replica::forward::{to_replica, Forward};
use crate::tree::OpResult;

/// The op codes of a multi's operations, for encoding its response.
pub fn sub_op_codes(request: &Request<'_>) -> Vec<i32> {
    let Request::Multi(ops) = request else {
        return Vec::new();
    };
    ops.iter()
        .map(|multi_op| match multi_op {
            MultiOp::Create { op, .. } => *op,
            MultiOp::Delete { .. } => op::DELETE,
            MultiOp::SetData { .. } => op::SET_DATA,
            MultiOp::Check { .. } => op::CHECK,
            MultiOp::GetChildren { .. } => op::GET_CHILDREN,
            MultiOp::GetData { .. } => op::GET_DATA,
        })
        .collect()
}

/// Encodes a committed write's reply.
pub fn write_result(
    out: &mut Vec<u8>,
    xid: i32,
    zxid: i64,
    op_code: i32,
    sub_ops: &[i32],
    result: &OpResult,
) {
    let mut w = Writer::new(out);
    if let OpResult::Error(code) = result {
        let at = records::begin_reply(&mut w, xid, zxid, code.code());
        w.end_frame(at);
        return;
    }
    let at = records::begin_reply(&mut w, xid, zxid, 0);
    write_body(&mut w, op_code, sub_ops, result);
    w.end_frame(at);
}

fn write_body(w: &mut Writer<'_>, op_code: i32, sub_ops: &[i32], result: &OpResult) {
    match result {
        OpResult::Created { path, stat } => {
            w.write_string(path);
            if op_code != op::CREATE {
                stat.write(w);
            }
        }
        OpResult::SetData { stat } | OpResult::SetAcl { stat } => stat.write(w),
        OpResult::Multi(results) => write_multi(w, sub_ops, results),
        _ => {}
    }
}

fn write_multi(w: &mut Writer<'_>, sub_ops: &[i32], results: &[OpResult]) {
    for (index, result) in results.iter().enumerate() {
        let sub_op = sub_ops.get(index).copied().unwrap_or(op::ERROR);
        match result {
            OpResult::Error(code) => {
                records::encode::multi_header(w, op::ERROR, false, code.code());
                w.write_i32(code.code());
            }
            OpResult::Created { path, stat } => {
                let created_op = if sub_op == op::CREATE {
                    op::CREATE
                } else {
                    op::CREATE2
                };
                records::encode::multi_header(w, created_op, false, 0);
                w.write_string(path);
                if created_op == op::CREATE2 {
                    stat.write(w);
                }
            }
            OpResult::SetData { stat } => {
                records::encode::multi_header(w, op::SET_DATA, false, 0);
                stat.write(w);
            }
            _ => records::encode::multi_header(w, sub_op, false, 0),
        }
    }
    records::encode::multi_header(w, -1, true, -1);
}

/// ZooKeeper's short op names, as `cons` prints them.
pub fn op_name(code: i32) -> &'static str {
    match code {
        op::CREATE => "CREA",
        op::DELETE => "DELE",
        op::EXISTS => "EXIS",
        op::GET_DATA => "GETD",
        op::SET_DATA => "SETD",
        op::GET_ACL => "GETA",
        op::SET_ACL => "SETA",
        op::GET_CHILDREN => "GETC",
        op::SYNC => "SYNC",
        op::PING => "PING",
        op::GET_CHILDREN2 => "GETC",
        op::CHECK => "CKV",
        op::MULTI => "MULT",
        op::CREATE2 => "CRE2",
        op::CREATE_CONTAINER => "CRTC",
        op::CREATE_TTL => "CRTT",
        op::MULTI_READ => "MLTR",
        op::AUTH => "AUTH",
        op::SET_WATCHES | op::SET_WATCHES2 => "SETW",
        op::SASL => "SASL",
        op::GET_EPHEMERALS => "GETE",
        op::GET_ALL_CHILDREN_NUMBER => "GETACN",
        op::ADD_WATCH => "ADDW",
        op::WHO_AM_I => "HOMI",
        op::CLOSE_SESSION => "CLOS",
        op::CHECK_WATCHES => "CHKW",
        op::REMOVE_WATCHES => "REMW",
        _ => "UNKNOWN",
    }
}

/// Writes a reply that carries only an error code.
pub fn write_error(out: &mut Vec<u8>, xid: i32, zxid: i64, code: ErrorCode) {
    records::write_header_only(out, xid, zxid, code.code());
}
