//! Spring Security's and ASP.NET Core Identity's users tables on PostgreSQL, as their
//! schema scripts and migrations create them, with the `[target]` section that maps them.

use super::{Framework, Login};

/// Spring Security's `JdbcUserDetailsManager` default schema (`users.ddl`, its types as
/// PostgreSQL has them), plus the application's own first name. The foreign key from
/// `authorities` follows a username the sync changes (an adopted row's email in its own
/// case, `free_email`'s tombstone) only with `ON UPDATE CASCADE`. Authorities stay the
/// backend's: its `authoritiesByUsernameQuery` gives a user with none `ROLE_USER`.
pub(crate) const SPRING: Framework = Framework {
    table: "public.users",
    login: Login::Spring,
    email: "username",
    id: "(SELECT string_agg(a.authority, ',' ORDER BY a.authority) FROM authorities a \
         WHERE a.username = users.username)",
    pk: "username",
    ddl: r#"
        create table users(username varchar(50) not null primary key,
            password varchar(500) not null, enabled boolean not null);
        create table authorities (username varchar(50) not null,
            authority varchar(50) not null,
            constraint fk_authorities_users foreign key(username) references users(username)
                on update cascade);
        create unique index ix_auth_username on authorities (username,authority);
        alter table users add column first_name varchar(50)
    "#,
    mapping: r#"
        [target]
        table = "public.users"
        key = "auth_user_id"
        [target.columns]
        username = { field = "email", max_length = 50, too_long = "refuse" }
        password = { field = "password_hash", prefix = "{bcrypt}", bcrypt = "2a" }
        first_name = "first_name"
        [target.deactivation]
        flag = "enabled"
    "#,
    legacy: r#"
        insert into users (username, password, enabled, first_name)
        values ('USER1@Example.COM', '{noop}legacy', true, 'Old'),
               ('root@localhost', '{noop}root', true, 'Root');
        insert into authorities values ('USER1@Example.COM', 'ROLE_TEACHER'),
               ('root@localhost', 'ROLE_ADMIN')
    "#,
    active: "enabled",
    reason: None,
    first_name: "first_name",
    password: "password",
    prefix: "{bcrypt}",
    bcrypt: "2a",
    backend: (
        "(SELECT string_agg(a.authority, ',') FROM authorities a \
          WHERE a.username = users.username)",
        "ROLE_TEACHER",
    ),
    extra: "enabled::text",
};

/// ASP.NET Core Identity's `AspNetUsers` as EF Core 8 with Npgsql creates it (the initial
/// migration of `IdentityDbContext<ApplicationUser>`, the application's user adding
/// first and last names), plus the defaults the backend adds for the stamps (Identity
/// refuses to sign in a user whose `SecurityStamp` is NULL; its own code always sets
/// both, so the defaults only serve the sync's inserts).
pub(crate) const IDENTITY: Framework = Framework {
    table: r#"public."AspNetUsers""#,
    login: Login::AspNet,
    email: r#""Email""#,
    id: r#""Id""#,
    pk: r#""Id""#,
    ddl: r#"
        CREATE TABLE "AspNetUsers" (
            "Id" text NOT NULL,
            "FirstName" text NULL,
            "LastName" text NULL,
            "UserName" character varying(256) NULL,
            "NormalizedUserName" character varying(256) NULL,
            "Email" character varying(256) NULL,
            "NormalizedEmail" character varying(256) NULL,
            "EmailConfirmed" boolean NOT NULL,
            "PasswordHash" text NULL,
            "SecurityStamp" text NULL,
            "ConcurrencyStamp" text NULL,
            "PhoneNumber" text NULL,
            "PhoneNumberConfirmed" boolean NOT NULL,
            "TwoFactorEnabled" boolean NOT NULL,
            "LockoutEnd" timestamp with time zone NULL,
            "LockoutEnabled" boolean NOT NULL,
            "AccessFailedCount" integer NOT NULL,
            CONSTRAINT "PK_AspNetUsers" PRIMARY KEY ("Id")
        );
        CREATE INDEX "EmailIndex" ON "AspNetUsers" ("NormalizedEmail");
        CREATE UNIQUE INDEX "UserNameIndex" ON "AspNetUsers" ("NormalizedUserName");
        ALTER TABLE "AspNetUsers" ALTER COLUMN "SecurityStamp"
            SET DEFAULT upper(replace(gen_random_uuid()::text, '-', ''));
        ALTER TABLE "AspNetUsers" ALTER COLUMN "ConcurrencyStamp"
            SET DEFAULT gen_random_uuid()::text
    "#,
    mapping: r#"
        [target]
        table = "public.AspNetUsers"
        key = "auth_user_id"
        [target.columns]
        Id = "auth_id_on_insert"
        Email = "email"
        NormalizedEmail = { field = "email", case = "upper" }
        UserName = "email"
        NormalizedUserName = { field = "email", case = "upper" }
        PasswordHash = "password_hash"
        FirstName = "first_name"
        LastName = "last_name"
        EmailConfirmed = { constant = true }
        LockoutEnabled = { constant = true }
        PhoneNumberConfirmed = { constant = false, insert_only = true }
        TwoFactorEnabled = { constant = false, insert_only = true }
        AccessFailedCount = { constant = 0, insert_only = true }
        [target.deactivation]
        timestamp = "LockoutEnd"
        timestamp_value = "9999-12-31T23:59:59Z"
    "#,
    legacy: r#"
        INSERT INTO "AspNetUsers" ("Id", "FirstName", "UserName", "NormalizedUserName", "Email",
            "NormalizedEmail", "EmailConfirmed", "PasswordHash", "SecurityStamp",
            "ConcurrencyStamp", "PhoneNumberConfirmed", "TwoFactorEnabled", "LockoutEnabled",
            "AccessFailedCount")
        VALUES ('3f2504e0-4f89-11d3-9a0c-0305e82c3301', 'Old', 'user1', 'USER1',
                'USER1@Example.COM', 'USER1@EXAMPLE.COM', false, 'AQAAAAIAAYagAAAAEOldV3Hash',
                'LEGACYSTAMP', 'legacy-concurrency', false, true, true, 2),
               ('3f2504e0-4f89-11d3-9a0c-0305e82c3302', 'Root', 'root', 'ROOT',
                'root@localhost', 'ROOT@LOCALHOST', true, 'AQAAAAIAAYagAAAAERootV3Hash',
                'ROOTSTAMP', 'root-concurrency', false, false, true, 0)
    "#,
    active: r#""LockoutEnd" IS DISTINCT FROM '9999-12-31T23:59:59Z'"#,
    reason: None,
    first_name: r#""FirstName""#,
    password: r#""PasswordHash""#,
    prefix: "",
    bcrypt: "",
    backend: (
        r#""TwoFactorEnabled"::text || '/' || "AccessFailedCount" || '/' || "SecurityStamp""#,
        "true/2/LEGACYSTAMP",
    ),
    extra: r#""Id" || '/' || coalesce(to_char("LockoutEnd" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '')"#,
};
