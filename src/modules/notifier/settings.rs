//! What a user sets and sees: delivery preferences, a test message, proving a chat
//! (code sent, code typed back), Telegram link codes, recent deliveries.

use super::*;

impl NotifierService {
    /// The user's notification settings and Telegram status.
    async fn recipient(&self, user_id: i64) -> Result<Recipient, NotifierError> {
        self.inner
            .db
            .notify()
            .recipient(user_id)
            .await?
            .ok_or(NotifierError::NoAccount)
    }

    pub async fn settings(&self, user_id: i64) -> Result<Settings, NotifierError> {
        let r = self.recipient(user_id).await?;
        let telegram = match (&self.inner.api, r.chat_id, r.broken) {
            (None, _, _) => TelegramStatus::Disabled,
            (Some(_), None, _) => match r.unconfirmed_chat {
                Some(chat) => TelegramStatus::Unconfirmed(chat),
                None => TelegramStatus::NotLinked,
            },
            (Some(_), Some(_), Some((reason, at))) => TelegramStatus::Broken(reason, at),
            (Some(_), Some(_), None) => TelegramStatus::Ok,
        };
        Ok(Settings {
            prefs: r.prefs,
            chat_id: r.chat_id,
            telegram,
            link_enabled: self.inner.link_enabled,
        })
    }

    /// Replaces the user's preferences; held messages are released at once.
    pub async fn set_prefs(&self, user_id: i64, prefs: Prefs) -> Result<Settings, NotifierError> {
        validate(&prefs).map_err(NotifierError::Invalid)?;
        let now = now_ms();
        self.inner
            .db
            .notify()
            .set_prefs(user_id, &prefs, now)
            .await?;
        self.inner.wake.notify_one();
        self.settings(user_id).await
    }

    /// Queues a test message to the user's chat, past quiet hours and digests. A test
    /// that gets through also clears a "broken" mark on that chat.
    pub async fn send_test(&self, user_id: i64, username: &str) -> Result<String, NotifierError> {
        if self.inner.api.is_none() {
            return Err(NotifierError::TelegramOff);
        }
        let r = self.recipient(user_id).await?;
        let chat = match (r.chat_id, r.unconfirmed_chat) {
            (Some(chat), _) => chat,
            (None, Some(_)) => return Err(NotifierError::ChatUnconfirmed),
            (None, None) => return Err(NotifierError::NoChat),
        };
        let now = now_ms();
        let nonce: u32 = rand::random();
        let key = format!("test:{user_id}:{now}:{nonce:08x}");
        let text = format!(
            "✅ Test message from meteomesh for <b>{}</b>. Weather alerts will arrive in this chat.",
            render::escape(username)
        );
        self.queue_notice(key.clone(), Some(user_id), chat, text)
            .await?;
        Ok(key)
    }

    /// Sends a confirmation code to the chat the user entered but has not proven yet:
    /// the only message such a chat ever gets, at most one per
    /// [`CHAT_CODE_INTERVAL`] per account. The user types it back with
    /// [`NotifierService::confirm_chat`].
    pub async fn send_chat_code(&self, user_id: i64, username: &str) -> Result<(), NotifierError> {
        if self.inner.api.is_none() {
            return Err(NotifierError::TelegramOff);
        }
        let chat = self
            .recipient(user_id)
            .await?
            .unconfirmed_chat
            .ok_or(NotifierError::NothingToConfirm)?;
        let now = now_ms();
        let interval = i64::try_from(CHAT_CODE_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        if let Some(last) = self.chat_confirmation(user_id).await?
            && now - last.sent_at < interval
        {
            let left = u64::try_from(interval - (now - last.sent_at)).unwrap_or(0);
            return Err(NotifierError::CodeTooSoon {
                retry_after: std::time::Duration::from_millis(left),
            });
        }
        let confirmation = notify::ChatConfirmation {
            chat_id: chat,
            code: link::new_code(),
            expires_at: now + i64::try_from(CHAT_CODE_LIFETIME.as_millis()).unwrap_or(0),
            attempts: 0,
            sent_at: now,
        };
        let text = format!(
            "Your meteomesh confirmation code for <b>{}</b>: <code>{}</code>\n\n\
             Type it on the account page to receive weather alerts here. If you did not \
             ask for this, ignore this message: nothing else will be sent to this chat.",
            render::escape(username),
            confirmation.code
        );
        let message = notice(
            format!("confirm:{user_id}:{now}"),
            Some(user_id),
            chat,
            text,
            now,
        );
        self.inner
            .db
            .notify()
            .put_chat_confirmation(user_id, &confirmation, &message)
            .await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Confirms the user's entered chat with the code sent to it. After
    /// [`MAX_CODE_ATTEMPTS`] wrong tries the code is void.
    pub async fn confirm_chat(&self, user_id: i64, code: &str) -> Result<(), NotifierError> {
        let r = self.recipient(user_id).await?;
        let chat = r.unconfirmed_chat.ok_or(NotifierError::NothingToConfirm)?;
        let now = now_ms();
        let pending = self
            .chat_confirmation(user_id)
            .await?
            .filter(|p| p.chat_id == chat && p.expires_at > now && p.attempts < MAX_CODE_ATTEMPTS)
            .ok_or(NotifierError::NothingToConfirm)?;
        let typed = code.trim().to_ascii_uppercase();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            typed.as_bytes(),
            pending.code.as_bytes(),
        )) {
            self.inner.db.notify().count_wrong_code(user_id).await?;
            return Err(NotifierError::WrongCode);
        }
        let confirmed = self
            .inner
            .db
            .notify()
            .confirm_chat(user_id, chat, now)
            .await?;
        if !confirmed {
            return Err(NotifierError::NothingToConfirm);
        }
        tracing::info!(user_id, "Telegram chat confirmed by its code");
        Ok(())
    }

    async fn chat_confirmation(
        &self,
        user_id: i64,
    ) -> Result<Option<notify::ChatConfirmation>, StorageError> {
        self.inner.db.notify().chat_confirmation(user_id).await
    }

    /// Queues a finished message to a chat.
    async fn queue_notice(
        &self,
        key: String,
        user_id: Option<i64>,
        chat_id: i64,
        text: String,
    ) -> Result<(), StorageError> {
        let delivery = notice(key, user_id, chat_id, text, now_ms());
        self.inner.db.notify().enqueue(&[delivery], &[]).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Issues a one-time code that links the chat which sends `/start <code>` to the bot.
    pub async fn link_code(&self, user_id: i64) -> Result<LinkCode, NotifierError> {
        if !self.inner.link_enabled {
            return Err(NotifierError::LinkingOff);
        }
        let code = link::new_code();
        let expires_at = now_ms() + i64::try_from(LINK_CODE_LIFETIME.as_millis()).unwrap_or(0);
        let stored = code.clone();
        self.inner
            .db
            .notify()
            .put_link_code(user_id, &stored, expires_at)
            .await?;
        let deep_link = self
            .bot_username()
            .map(|bot| format!("https://t.me/{bot}?start={code}"));
        Ok(LinkCode {
            code,
            deep_link,
            expires_at,
        })
    }

    /// The user's latest Telegram messages, newest first.
    pub async fn deliveries(
        &self,
        user_id: i64,
        limit: usize,
    ) -> Result<Vec<notify::DeliveryRow>, NotifierError> {
        Ok(self
            .inner
            .db
            .notify()
            .recent_deliveries(user_id, limit)
            .await?)
    }

    pub fn bot_username(&self) -> Option<String> {
        self.inner
            .bot_username
            .read()
            .ok()
            .and_then(|name| name.clone())
    }
}

/// Checks preferences a user sent.
pub fn validate(prefs: &Prefs) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if !(1..=1440).contains(&prefs.digest_minutes) {
        errors.push(FieldError::new(
            "digest_minutes",
            "must be between 1 and 1440 minutes",
        ));
    }
    if let Some(q) = prefs.quiet
        && q.start == q.end
    {
        errors.push(FieldError::new(
            "quiet_hours",
            "start and end are equal; leave quiet hours empty to turn them off",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
