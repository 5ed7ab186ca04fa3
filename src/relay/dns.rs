//! The world's nameserver, spoken over TCP (RFC 1035 §4.2.2: each message
//! prefixed with its two-byte length).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Client;
use crate::world::World;

/// Answers queries on one connection until the client closes it.
pub async fn serve(mut s: Client, world: Arc<Mutex<World>>) {
    let mut len = [0u8; 2];
    while s.read_exact(&mut len).await.is_ok() {
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if s.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = World::lock(&world).answer_dns(&query) else {
            return;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut msg = n.to_be_bytes().to_vec();
        msg.extend_from_slice(&reply);
        if s.write_all(&msg).await.is_err() {
            return;
        }
    }
}
