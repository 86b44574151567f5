//! The async facade (feature `tokio`): [`AsyncVault`], the shop's calls of [`Vault`] as `async fn`s.
//!
//! A thin layer over the public `Vault` API and nothing else: each call moves what it needs into a
//! closure and runs the synchronous call on tokio's blocking pool (`spawn_blocking`), so disk I/O,
//! fsync and Argon2id never block a runtime thread. The arguments mirror the synchronous ones,
//! except that what the call stores (a [`Record`], a `put_as` value) is moved in rather than
//! borrowed, and closures must be `Send + 'static`; borrowed ids, keys, names and requests are
//! copied.
//!
//! Every call returns the umbrella [`Error`]: the operation's own error is inside it
//! (`Error::Read(ReadError::NotFound { .. })` for `get`, ...), and a blocking task that did not
//! finish is [`Error::Interrupted`]: `panicked: true` if the call (or the caller's closure)
//! panicked, `panicked: false` if the runtime shut down before it started (then it was not
//! applied). A panic never crosses into the caller's task.
//!
//! Dropping a call's future (a request timeout, a client that went away) does not stop a call
//! that has started: it runs to its end on the blocking pool, and its result is discarded.
//! The calls must be awaited inside a Tokio runtime (`spawn_blocking` panics outside one).
//!
//! [`Record`]: crate::Record

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::admin::Admin;
use crate::gdpr::SubjectExport;
use crate::schema::Schema;
use crate::{
    Actor, Credentials, Error, EventReport, EventWindow, ForgetOptions, ForgetReport,
    LifecycleError, Reads, Record, RecordKey, Request, ScopeError, SubjectId, Timestamp,
    Transaction, TransactionError, Vault, VaultOptions, VaultPaths,
};

/// A [`Vault`] for async code: every call runs on tokio's blocking pool (see the module
/// documentation). Cheap to clone (an `Arc`); share one per process, e.g. as axum state.
#[derive(Debug, Clone)]
pub struct AsyncVault {
    vault: Arc<Vault>,
}

/// Runs `f` on the blocking pool; a task that did not finish becomes [`Error::Interrupted`].
async fn blocking<T, F>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(Error::Interrupted {
            panicked: e.is_panic(),
        }),
    }
}

impl From<Arc<Vault>> for AsyncVault {
    fn from(vault: Arc<Vault>) -> Self {
        AsyncVault { vault }
    }
}

impl From<Vault> for AsyncVault {
    fn from(vault: Vault) -> Self {
        AsyncVault {
            vault: Arc::new(vault),
        }
    }
}

impl AsyncVault {
    /// [`Vault::create`] on the blocking pool (Argon2id runs there).
    pub async fn create(
        paths: VaultPaths,
        creds: Credentials,
        schema: Schema,
        options: VaultOptions,
    ) -> Result<AsyncVault, Error> {
        blocking(move || Ok(Vault::create(&paths, &creds, schema, options)?.into())).await
    }

    /// [`Vault::open`] on the blocking pool (Argon2id runs there).
    pub async fn open(
        paths: VaultPaths,
        creds: Credentials,
        options: VaultOptions,
    ) -> Result<AsyncVault, Error> {
        blocking(move || Ok(Vault::open(&paths, &creds, options)?.into())).await
    }

    /// [`Vault::open_or_create`] on the blocking pool.
    pub async fn open_or_create(
        paths: VaultPaths,
        creds: Credentials,
        schema: Schema,
        options: VaultOptions,
    ) -> Result<AsyncVault, Error> {
        blocking(move || Ok(Vault::open_or_create(&paths, &creds, schema, options)?.into())).await
    }

    /// A purpose-bound handle ([`Vault::scoped`]) that owns its share of the vault, so a
    /// component keeps it (in axum state, a task) and never holds the whole vault. Refuses an
    /// unknown purpose or none, as [`Vault::scoped`] does.
    pub fn scoped(
        &self,
        purposes: &[&str],
        actor: impl Into<Actor>,
    ) -> Result<AsyncScoped, ScopeError> {
        let actor = actor.into();
        self.vault.scoped(purposes, actor.clone())?;
        Ok(AsyncScoped {
            vault: Arc::clone(&self.vault),
            purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
            actor,
            reads: Reads::default(),
            events: EventWindow::default(),
        })
    }

    /// The synchronous [`Vault`], for the rare call that needs no I/O (e.g. [`Vault::schema`]).
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// Drops this handle; the last one closes the vault (its drop syncs files) on the blocking pool.
    pub async fn close(self) -> Result<(), Error> {
        match Arc::into_inner(self.vault) {
            Some(vault) => {
                blocking(move || {
                    drop(vault);
                    Ok(())
                })
                .await
            }
            None => Ok(()),
        }
    }

    /// Runs `f` on the vault on the blocking pool: any synchronous call the facade does not wrap.
    pub async fn run_blocking<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Vault) -> T + Send + 'static,
        T: Send + 'static,
    {
        let vault = Arc::clone(&self.vault);
        blocking(move || Ok(f(&vault))).await
    }

    /// Runs `f` on [`Vault::admin`] on the blocking pool: `with_admin(move |a| a.backup(&dest))`.
    pub async fn with_admin<T, E, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(Admin<'_>) -> Result<T, E> + Send + 'static,
        E: Into<Error>,
        T: Send + 'static,
    {
        let vault = Arc::clone(&self.vault);
        blocking(move || f(vault.admin()).map_err(Into::into)).await
    }

    /// Runs `f` on the vault on the blocking pool, converting its error into [`Error`].
    async fn call<T, E, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Vault) -> Result<T, E> + Send + 'static,
        E: Into<Error>,
        T: Send + 'static,
    {
        let vault = Arc::clone(&self.vault);
        blocking(move || f(&vault).map_err(Into::into)).await
    }

    /// [`Vault::create_subject`].
    pub async fn create_subject(&self) -> Result<SubjectId, Error> {
        self.call(|v| v.create_subject()).await
    }

    /// [`Vault::create_subject_with`], the record moved in.
    pub async fn create_subject_with(
        &self,
        key: impl Into<RecordKey>,
        record: Record,
    ) -> Result<SubjectId, Error> {
        let key = key.into();
        self.call(move |v| v.create_subject_with(key, &record))
            .await
    }

    /// [`Vault::create_subject_with_as`].
    pub async fn create_subject_with_as<T>(
        &self,
        key: impl Into<RecordKey>,
        value: T,
    ) -> Result<SubjectId, Error>
    where
        T: serde::Serialize + Send + 'static,
    {
        let key = key.into();
        self.call(move |v| v.create_subject_with_as(key, &value))
            .await
    }

    /// [`Vault::create_subject_in_transaction`].
    pub async fn create_subject_in_transaction<T, F>(&self, f: F) -> Result<(SubjectId, T), Error>
    where
        F: FnOnce(&mut Transaction<'_>) -> Result<T, TransactionError> + Send + 'static,
        T: Send + 'static,
    {
        self.call(move |v| v.create_subject_in_transaction(f)).await
    }

    /// [`Vault::subject_exists`].
    pub async fn subject_exists(&self, subject: &SubjectId) -> Result<bool, Error> {
        let s = *subject;
        self.call(move |v| v.subject_exists(&s)).await
    }

    /// [`Vault::put`], the record moved in.
    pub async fn put(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        record: Record,
    ) -> Result<(), Error> {
        let (s, key) = (*subject, key.into());
        self.call(move |v| v.put(&s, key, &record)).await
    }

    /// [`Vault::put_as`], the value moved in.
    pub async fn put_as<T>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        value: T,
    ) -> Result<(), Error>
    where
        T: serde::Serialize + Send + 'static,
    {
        let (s, key) = (*subject, key.into());
        self.call(move |v| v.put_as(&s, key, &value)).await
    }

    /// [`Vault::update`], the changes moved in.
    pub async fn update(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        changes: Record,
    ) -> Result<(), Error> {
        let (s, key) = (*subject, key.into());
        self.call(move |v| v.update(&s, key, &changes)).await
    }

    /// [`Vault::get`].
    pub async fn get(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<Record, Error> {
        let (s, key) = (*subject, key.into());
        self.call(move |v| v.get(&s, key)).await
    }

    /// [`Vault::get_fields`].
    pub async fn get_fields(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        fields: &[&str],
    ) -> Result<Record, Error> {
        let (s, key) = (*subject, key.into());
        let fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        self.call(move |v| {
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            v.get_fields(&s, key, &fields)
        })
        .await
    }

    /// [`Vault::get_as`].
    pub async fn get_as<T>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<T, Error>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let (s, key) = (*subject, key.into());
        self.call(move |v| v.get_as(&s, key)).await
    }

    /// [`Vault::delete`].
    pub async fn delete(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<(), Error> {
        let (s, key) = (*subject, key.into());
        self.call(move |v| v.delete(&s, key)).await
    }

    /// [`Vault::find`].
    pub async fn find(
        &self,
        record_type: &str,
        field: &str,
        value: impl Into<serde_json::Value>,
    ) -> Result<Vec<SubjectId>, Error> {
        let (record_type, field, value) = (record_type.to_owned(), field.to_owned(), value.into());
        self.call(move |v| v.find(&record_type, &field, value))
            .await
    }

    /// [`Vault::records_of`].
    pub async fn records_of(&self, subject: &SubjectId) -> Result<Vec<RecordKey>, Error> {
        let s = *subject;
        self.call(move |v| v.records_of(&s)).await
    }

    /// [`Vault::record_event`].
    pub async fn record_event(
        &self,
        subject: &SubjectId,
        event: &str,
        at: Timestamp,
        req: &Request,
    ) -> Result<EventReport, Error> {
        let (s, event, req) = (*subject, event.to_owned(), req.clone());
        self.call(move |v| v.record_event(&s, &event, at, &req))
            .await
    }

    /// [`Vault::record_event_for`].
    pub async fn record_event_for(
        &self,
        subject: &SubjectId,
        record: &RecordKey,
        event: &str,
        at: Timestamp,
        req: &Request,
    ) -> Result<EventReport, Error> {
        let (s, record, event, req) = (*subject, record.clone(), event.to_owned(), req.clone());
        self.call(move |v| v.record_event_for(&s, &record, &event, at, &req))
            .await
    }

    /// [`Vault::forget`].
    pub async fn forget(
        &self,
        subject: &SubjectId,
        req: &Request,
        options: ForgetOptions,
    ) -> Result<ForgetReport, Error> {
        let (s, req) = (*subject, req.clone());
        self.call(move |v| v.forget(&s, &req, options)).await
    }

    /// [`Vault::forget_many`].
    pub async fn forget_many(
        &self,
        subjects: &[SubjectId],
        req: &Request,
        options: ForgetOptions,
    ) -> Result<BTreeMap<SubjectId, Result<ForgetReport, LifecycleError>>, Error> {
        let (subjects, req) = (subjects.to_vec(), req.clone());
        self.call(move |v| v.forget_many(&subjects, &req, options))
            .await
    }

    /// [`Vault::export_subject`].
    pub async fn export_subject(&self, subject: &SubjectId) -> Result<SubjectExport, Error> {
        let s = *subject;
        self.call(move |v| v.export_subject(&s)).await
    }

    /// [`Vault::transaction`], the closure run on the blocking pool.
    pub async fn transaction<T, F>(&self, subject: &SubjectId, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut Transaction<'_>) -> Result<T, TransactionError> + Send + 'static,
        T: Send + 'static,
    {
        let s = *subject;
        self.call(move |v| v.transaction(&s, f)).await
    }
}

/// A purpose-bound handle for async code ([`AsyncVault::scoped`]): the calls of [`Scoped`] as
/// `async fn`s on the blocking pool. It holds the vault only to make its [`Scoped`] handle there,
/// and exposes no way back to the whole vault. Cheap to clone.
///
/// [`Scoped`]: crate::Scoped
#[derive(Clone)]
pub struct AsyncScoped {
    vault: Arc<Vault>,
    purposes: Vec<String>,
    actor: Actor,
    reads: Reads,
    events: EventWindow,
}

impl std::fmt::Debug for AsyncScoped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncScoped")
            .field("purposes", &self.purposes)
            .field("actor", &self.actor)
            .field("reads", &self.reads)
            .finish_non_exhaustive()
    }
}

impl AsyncScoped {
    /// [`Scoped::reads`](crate::Scoped::reads).
    pub fn reads(mut self, reads: Reads) -> Self {
        self.reads = reads;
        self
    }

    /// [`Scoped::event_window`](crate::Scoped::event_window).
    pub fn event_window(mut self, window: EventWindow) -> Self {
        self.events = window;
        self
    }

    /// The purposes this handle may read and write, sorted.
    pub fn purposes(&self) -> impl Iterator<Item = &str> {
        self.purposes.iter().map(String::as_str)
    }

    /// Runs `f` on this handle's [`Scoped`](crate::Scoped) on the blocking pool.
    async fn call<T, E, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&crate::Scoped<'_>) -> Result<T, E> + Send + 'static,
        E: Into<Error>,
        T: Send + 'static,
    {
        let (vault, purposes, actor) = (
            Arc::clone(&self.vault),
            self.purposes.clone(),
            self.actor.clone(),
        );
        let (reads, events) = (self.reads, self.events);
        blocking(move || {
            let names: Vec<&str> = purposes.iter().map(String::as_str).collect();
            let handle = vault
                .scoped(&names, actor)?
                .reads(reads)
                .event_window(events);
            f(&handle).map_err(Into::into)
        })
        .await
    }

    /// [`Scoped::get`](crate::Scoped::get).
    pub async fn get(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<Record, Error> {
        let (s, k) = (*subject, key.into());
        self.call(move |h| h.get(&s, k)).await
    }

    /// [`Scoped::get_fields`](crate::Scoped::get_fields).
    pub async fn get_fields(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        fields: &[&str],
    ) -> Result<Record, Error> {
        let (s, k) = (*subject, key.into());
        let fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        self.call(move |h| {
            let names: Vec<&str> = fields.iter().map(String::as_str).collect();
            h.get_fields(&s, k, &names)
        })
        .await
    }

    /// [`Scoped::get_as`](crate::Scoped::get_as).
    pub async fn get_as<T>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<T, Error>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let (s, k) = (*subject, key.into());
        self.call(move |h| h.get_as::<T>(&s, k)).await
    }

    /// [`Scoped::get_masked`](crate::Scoped::get_masked).
    pub async fn get_masked(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<Record, Error> {
        let (s, k) = (*subject, key.into());
        self.call(move |h| h.get_masked(&s, k)).await
    }

    /// [`Scoped::put`](crate::Scoped::put).
    pub async fn put(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        record: Record,
    ) -> Result<(), Error> {
        let (s, k) = (*subject, key.into());
        self.call(move |h| h.put(&s, k, &record)).await
    }

    /// [`Scoped::put_as`](crate::Scoped::put_as).
    pub async fn put_as<T>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        value: T,
    ) -> Result<(), Error>
    where
        T: serde::Serialize + Send + 'static,
    {
        let (s, k) = (*subject, key.into());
        self.call(move |h| h.put_as(&s, k, &value)).await
    }

    /// [`Scoped::update`](crate::Scoped::update).
    pub async fn update(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        changes: Record,
    ) -> Result<(), Error> {
        let (s, k) = (*subject, key.into());
        self.call(move |h| h.update(&s, k, &changes)).await
    }

    /// [`Scoped::find`](crate::Scoped::find).
    pub async fn find(
        &self,
        record_type: &str,
        field: &str,
        value: impl Into<serde_json::Value>,
    ) -> Result<Vec<SubjectId>, Error> {
        let (t, f, v) = (record_type.to_owned(), field.to_owned(), value.into());
        self.call(move |h| h.find(&t, &f, v)).await
    }

    /// [`Scoped::export_subject`](crate::Scoped::export_subject).
    pub async fn export_subject(&self, subject: &SubjectId) -> Result<SubjectExport, Error> {
        let s = *subject;
        self.call(move |h| h.export_subject(&s)).await
    }

    /// [`Scoped::delete`](crate::Scoped::delete).
    pub async fn delete(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<(), Error> {
        let (s, k) = (*subject, key.into());
        self.call(move |h| h.delete(&s, k)).await
    }

    /// [`Scoped::transaction`](crate::Scoped::transaction), the closure run on the blocking pool.
    pub async fn transaction<T, F>(&self, subject: &SubjectId, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut Transaction<'_>) -> Result<T, TransactionError> + Send + 'static,
        T: Send + 'static,
    {
        let s = *subject;
        self.call(move |h| h.transaction(&s, f)).await
    }

    /// [`Scoped::create_subject_in_transaction`](crate::Scoped::create_subject_in_transaction).
    pub async fn create_subject_in_transaction<T, F>(&self, f: F) -> Result<(SubjectId, T), Error>
    where
        F: FnOnce(&mut Transaction<'_>) -> Result<T, TransactionError> + Send + 'static,
        T: Send + 'static,
    {
        self.call(move |h| h.create_subject_in_transaction(f)).await
    }

    /// [`Scoped::record_event_for`](crate::Scoped::record_event_for).
    pub async fn record_event_for(
        &self,
        subject: &SubjectId,
        record: &RecordKey,
        event: &str,
        at: Timestamp,
        reason: &str,
    ) -> Result<EventReport, Error> {
        let (s, r, e, why) = (
            *subject,
            record.clone(),
            event.to_owned(),
            reason.to_owned(),
        );
        self.call(move |h| h.record_event_for(&s, &r, &e, at, &why))
            .await
    }
}
