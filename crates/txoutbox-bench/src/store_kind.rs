//! Which stores a scenario runs on, round by round.

/// A store a round runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Db {
    Postgres,
    Sqlite,
    MySql,
}

impl Db {
    /// The store's name in the output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::MySql => "mysql",
        }
    }

    /// PostgreSQL, SQLite and MySQL / MariaDB, each unless skipped.
    pub(crate) fn selected(postgres: bool, sqlite: bool, mysql: bool) -> Vec<Db> {
        postgres
            .then_some(Db::Postgres)
            .into_iter()
            .chain(sqlite.then_some(Db::Sqlite))
            .chain(mysql.then_some(Db::MySql))
            .collect()
    }
}
