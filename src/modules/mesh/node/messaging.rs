//! Users' messages: delivery to users connected here, acknowledgements, sends and
//! broadcasts (with or without waiting for acks), and the offline queue sent again
//! when a user comes back.

use super::*;

impl Node {
    /// Hands a message or alert to a user connected here.
    pub(super) async fn deliver_local(&mut self, user: &str, env: &Envelope) {
        let inbox = if env.tag == contract::TAG_ALERT {
            let Ok(alert) = serde_json::from_value::<AlertEvent>(env.data.clone()) else {
                return;
            };
            InboxMessage {
                id: alert.key(),
                from: "meteomesh".into(),
                seq: 0,
                kind: "alert".into(),
                sent_at: alert.at.clone(),
                body: env.data.clone(),
                ack: false,
            }
        } else {
            let Ok(msg) = serde_json::from_value::<MeshMessage>(env.data.clone()) else {
                return;
            };
            if msg.ack {
                let origin = env.reply.clone().unwrap_or_else(|| env.origin.clone());
                self.local_deliveries
                    .insert((msg.msg.clone(), user.to_owned()), (origin, Instant::now()));
            }
            InboxMessage {
                id: msg.msg,
                from: env.from.clone(),
                seq: msg.seq,
                kind: if env.to == Target::All {
                    "broadcast".into()
                } else {
                    "message".into()
                },
                body: msg.body,
                ack: msg.ack,
                sent_at: msg.sent_at,
            }
        };
        self.metrics.mesh.local_deliveries.inc();
        if let Err(e) = self.bus.publish(&contract::mesh_inbox(user), &inbox).await {
            tracing::warn!(error = %e, "cannot hand a message to a local user");
        }
    }

    pub(super) fn on_user_ack(&mut self, m: Incoming) {
        let Some(user) = contract::mesh_user_of(&m.topic, "ack").map(str::to_owned) else {
            return;
        };
        let Ok(ack) = m.decode::<InboxAck>() else {
            return;
        };
        let Some((origin, _)) = self
            .local_deliveries
            .remove(&(ack.id.clone(), user.clone()))
        else {
            return;
        };
        if origin == self.own_id {
            self.on_ack(&ack.id, &user);
        } else {
            let data = serde_json::to_value(MeshAck { msg: ack.id, user }).unwrap_or_default();
            let env = self.new_envelope("", Target::Node(origin), contract::TAG_ACK, data);
            self.route(&env, None);
        }
    }

    /// A recipient acknowledged a message this node originated.
    pub(super) fn on_ack(&mut self, msg: &str, user: &str) {
        if let Some(w) = self.waiters.get_mut(msg) {
            w.acked.insert(user.to_owned());
            let done = match w.mode {
                SendMode::Send => true,
                _ => w.acked.len() as u32 >= w.online,
            };
            if done && let Some(w) = self.waiters.remove(msg) {
                self.finish(msg, w);
            }
        }
        if self.retry.contains_key(user) {
            self.acked_queued.push(msg.to_owned());
            // The recipient is answering: the next retry may come soon again.
            if let Some(r) = self.retry.get_mut(user) {
                r.1 = RETRY_FIRST;
            }
        }
    }

    pub(super) fn finish(&self, msg: &str, w: Waiter) {
        let mut result = result_for(&w.req, Some(msg), w.seq);
        match w.mode {
            SendMode::Send => result.delivered = Some(!w.acked.is_empty()),
            _ => {
                result.acked = Some(w.acked.len() as u32);
                result.online = Some(w.online);
            }
        }
        let bus = self.bus.clone();
        tokio::spawn(async move { deliver_reply(&bus, w.reply, result).await });
    }

    pub(super) fn user_seq(&mut self) -> u64 {
        // Microseconds, so a sender's HTTP and client sends interleave in time order.
        let now = u64::try_from(now_ms()).unwrap_or_default() * 1000;
        self.last_user_seq = (self.last_user_seq + 1).max(now);
        self.last_user_seq
    }

    pub(super) fn online_anywhere(&self, user: &str) -> bool {
        let linked = |n: &str| self.linked(n);
        self.presence.is_local(user)
            || !self
                .presence
                .remote_nodes_of(user, Instant::now(), &linked)
                .is_empty()
    }

    pub(super) async fn on_user_send(&mut self, m: Incoming) {
        let Some(user) = contract::mesh_user_of(&m.topic, "send").map(str::to_owned) else {
            return;
        };
        match m.decode::<SendRequest>() {
            Ok(req) => self.send(&user, req, Reply::Mqtt(user.clone())).await,
            Err(e) => {
                let result = refused(
                    "",
                    SendRefusal::Invalid,
                    &format!("not a send request: {e}"),
                );
                deliver_reply(&self.bus, Reply::Mqtt(user), result).await;
            }
        }
    }

    pub async fn send(&mut self, from: &str, req: SendRequest, reply: Reply) {
        if let Err(problem) = check_request(&req, self.cfg.max_message_bytes) {
            let result = refused(&req.req, SendRefusal::Invalid, &problem);
            return deliver_reply(&self.bus, reply, result).await;
        }
        let seq = req.seq.unwrap_or_else(|| self.user_seq());
        let mode_label = match req.mode {
            SendMode::Send => "send",
            SendMode::FireSend => "fire_send",
            SendMode::Broadcast => "broadcast",
            SendMode::FireBroadcast => "fire_broadcast",
        };
        self.metrics
            .mesh
            .messages
            .with_label_values(&[mode_label])
            .inc();
        self.next_seq += 1;
        let msg_id = format!("{}:{}", self.own_id, self.next_seq);
        let sent_at = rfc3339_ms(now_ms());
        let wants_ack = matches!(
            req.mode,
            SendMode::Send | SendMode::Broadcast | SendMode::FireSend
        );
        let message = MeshMessage {
            msg: msg_id.clone(),
            seq,
            body: req.body.clone(),
            ack: wants_ack,
            sent_at: sent_at.clone(),
        };
        match req.mode {
            SendMode::Send => {
                let to = req.to.clone().unwrap_or_default();
                if !self.online_anywhere(&to) {
                    let result = SendResult {
                        delivered: Some(false),
                        ..result_for(&req.req, Some(&msg_id), seq)
                    };
                    return deliver_reply(&self.bus, reply, result).await;
                }
                self.await_acks(&msg_id, &req, seq, 1, reply);
                self.transmit_to_user(from, &to, &message).await;
            }
            SendMode::FireSend => self.fire_send(from, &req, &message, reply).await,
            SendMode::Broadcast | SendMode::FireBroadcast => {
                self.broadcast(from, &req, &message, reply).await
            }
        }
    }

    /// Fire-and-forget to one user: queued (kept until acknowledged or expired) and sent
    /// at once when the user is online anywhere.
    async fn fire_send(
        &mut self,
        from: &str,
        req: &SendRequest,
        message: &MeshMessage,
        reply: Reply,
    ) {
        let to = req.to.clone().unwrap_or_default();
        let queued = QueuedMessage {
            id: message.msg.clone(),
            from_user: from.to_owned(),
            to_user: to.clone(),
            seq: message.seq,
            body: req.body.to_string(),
            sent_at: message.sent_at.clone(),
            expires_at: system_now()
                + i64::try_from(self.cfg.offline_expiry.as_secs()).unwrap_or(i64::MAX / 4),
        };
        let max = self.cfg.offline_max_per_user;
        let stored = self.db.mesh().enqueue(&queued, max).await;
        let result = match stored {
            Ok(Ok(())) => SendResult {
                queued: Some(true),
                ..result_for(&req.req, Some(&message.msg), message.seq)
            },
            Ok(Err(QueueRefusal::Full)) => refused(
                &req.req,
                SendRefusal::QueueFull,
                &format!("{to} already has {max} messages waiting; try again later"),
            ),
            Err(e) => {
                storage_failed("cannot queue a message", &e);
                refused(
                    &req.req,
                    SendRefusal::Unavailable,
                    "the message could not be stored",
                )
            }
        };
        let accepted = result.queued == Some(true);
        deliver_reply(&self.bus, reply, result).await;
        if accepted {
            self.metrics.mesh.queued.inc();
            let next = Instant::now() + RETRY_FIRST;
            let online = self.online_anywhere(&to);
            let entry = self.retry.entry(to.clone()).or_insert((next, RETRY_FIRST));
            if online {
                entry.0 = next;
                self.transmit_to_user(from, &to, message).await;
            }
        }
    }

    /// To everyone online but the sender: delivered here, flooded to the other nodes.
    async fn broadcast(
        &mut self,
        from: &str,
        req: &SendRequest,
        message: &MeshMessage,
        reply: Reply,
    ) {
        let linked = |n: &str| self.linked(n);
        let online = self
            .presence
            .online(Instant::now(), &linked)
            .into_iter()
            .filter(|u| u.user != from)
            .count() as u32;
        let mut env = self.new_envelope(
            from,
            Target::All,
            contract::TAG_MESSAGE,
            serde_json::to_value(message).unwrap_or_default(),
        );
        env.id = message.msg.clone();
        if req.mode == SendMode::Broadcast && online > 0 {
            self.await_acks(&message.msg, req, message.seq, online, reply);
        } else {
            let result = SendResult {
                acked: (req.mode == SendMode::Broadcast).then_some(0),
                online: Some(online),
                ..result_for(&req.req, Some(&message.msg), message.seq)
            };
            deliver_reply(&self.bus, reply, result).await;
        }
        let users: Vec<String> = self.presence.local_users().cloned().collect();
        for user in users.iter().filter(|u| u.as_str() != from) {
            self.deliver_local(user, &env).await;
        }
        self.route(&env, None);
    }

    /// Answers `reply` once `online` recipients acknowledged `msg_id`, or at the timeout.
    pub(super) fn await_acks(
        &mut self,
        msg_id: &str,
        req: &SendRequest,
        seq: u64,
        online: u32,
        reply: Reply,
    ) {
        self.waiters.insert(
            msg_id.to_owned(),
            Waiter {
                req: req.req.clone(),
                seq,
                mode: req.mode,
                reply,
                deadline: Instant::now() + self.cfg.send_timeout,
                acked: HashSet::new(),
                online,
            },
        );
    }

    /// Sends one message to a user: locally if connected here, and over the mesh to
    /// wherever else they are.
    pub(super) async fn transmit_to_user(&mut self, from: &str, to: &str, message: &MeshMessage) {
        let env = self.new_envelope(
            from,
            Target::User(to.to_owned()),
            contract::TAG_MESSAGE,
            serde_json::to_value(message).unwrap_or_default(),
        );
        if self.presence.is_local(to) {
            self.deliver_local(to, &env).await;
        }
        self.route(&env, None);
    }

    /// Sends every queued message of `user` again, oldest first (go-back-N: an ack lost
    /// with a dead node must not let a later message overtake an earlier one).
    pub(super) async fn resend_queued(&mut self, user: String) {
        let u = user.clone();
        let waiting = match self.db.mesh().waiting_for(&u).await {
            Ok(w) => w,
            Err(e) => {
                storage_failed("cannot read queued messages", &e);
                return;
            }
        };
        let pending: HashSet<&String> = self.acked_queued.iter().collect();
        let waiting: Vec<QueuedMessage> = waiting
            .into_iter()
            .filter(|m| !pending.contains(&m.id))
            .collect();
        if waiting.is_empty() {
            self.retry.remove(&user);
            return;
        }
        for m in waiting {
            let message = MeshMessage {
                msg: m.id,
                seq: m.seq,
                body: serde_json::from_str(&m.body).unwrap_or(Value::Null),
                ack: true,
                sent_at: m.sent_at,
            };
            self.transmit_to_user(&m.from_user, &user, &message).await;
        }
        let delay = self.retry.get(&user).map_or(RETRY_FIRST, |r| r.1);
        self.retry
            .insert(user, (Instant::now() + delay, (delay * 2).min(RETRY_MAX)));
    }
}
