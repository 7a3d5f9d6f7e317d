"""The server's state in one SQLite file (WAL mode, one connection per thread).

Every write runs in one `BEGIN IMMEDIATE` transaction, so a request's changes (a whole batch of
annotations, a job with its user) are stored entirely or not at all, and concurrent writers
queue instead of interleaving.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyseg.server.auth import new_key_pair
from cyseg.server.errors import BadRequest, NotFound
from cyseg.server.records import (ALGO_ANNOTATION_CLASS, IMAGE_CLASS, JOB_CLASS, PROJECT_CLASS,
                                  SOFTWARE_CLASS, USER_ANNOTATION_CLASS, Annotation, AttachedFile,
                                  Image, Job, JobParameter, NewAnnotation, Ontology, Project,
                                  Property, Software, SoftwareParameter, Term, User)

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS sequence (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT OR IGNORE INTO sequence VALUES (1, 0);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, username TEXT NOT NULL, public_key TEXT NOT NULL UNIQUE,
    private_key TEXT NOT NULL, job INTEGER, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ontologies (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS terms (
    id INTEGER PRIMARY KEY, ontology INTEGER NOT NULL REFERENCES ontologies(id), name TEXT NOT NULL,
    color TEXT NOT NULL, parent INTEGER, created INTEGER NOT NULL, UNIQUE (ontology, name));
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, ontology INTEGER NOT NULL REFERENCES ontologies(id),
    created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, project INTEGER NOT NULL REFERENCES projects(id), base_image INTEGER NOT NULL UNIQUE,
    slice INTEGER NOT NULL UNIQUE, path TEXT NOT NULL, filename TEXT NOT NULL, ims_path TEXT NOT NULL UNIQUE,
    width INTEGER NOT NULL, height INTEGER NOT NULL, resolution REAL, magnification INTEGER,
    created INTEGER NOT NULL, UNIQUE (project, path));
CREATE TABLE IF NOT EXISTS software (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT, digest TEXT NOT NULL UNIQUE, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS software_parameters (
    id INTEGER PRIMARY KEY, software INTEGER NOT NULL REFERENCES software(id), name TEXT NOT NULL,
    type TEXT NOT NULL, default_value TEXT, required INTEGER NOT NULL, set_by_server INTEGER NOT NULL,
    idx INTEGER NOT NULL, human_name TEXT NOT NULL, value_key TEXT, command_line_flag TEXT,
    UNIQUE (software, name));
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, project INTEGER NOT NULL REFERENCES projects(id),
    software INTEGER NOT NULL REFERENCES software(id), number INTEGER NOT NULL, user_job INTEGER NOT NULL,
    creator INTEGER NOT NULL, status INTEGER NOT NULL, status_comment TEXT, progress INTEGER NOT NULL,
    created INTEGER NOT NULL, updated INTEGER);
CREATE TABLE IF NOT EXISTS job_parameters (
    id INTEGER PRIMARY KEY, job INTEGER NOT NULL REFERENCES jobs(id),
    software_parameter INTEGER NOT NULL REFERENCES software_parameters(id), value TEXT, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY, image INTEGER NOT NULL REFERENCES images(id), project INTEGER NOT NULL,
    user INTEGER NOT NULL, algo INTEGER NOT NULL, location TEXT NOT NULL, area REAL NOT NULL,
    perimeter REAL NOT NULL, centroid_x REAL NOT NULL, centroid_y REAL NOT NULL, created INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS annotations_image ON annotations (image);
CREATE INDEX IF NOT EXISTS annotations_user ON annotations (user);
CREATE INDEX IF NOT EXISTS annotations_project ON annotations (project);
CREATE TABLE IF NOT EXISTS annotation_terms (
    annotation INTEGER NOT NULL REFERENCES annotations(id) ON DELETE CASCADE, term INTEGER NOT NULL,
    PRIMARY KEY (annotation, term));
CREATE INDEX IF NOT EXISTS annotation_terms_term ON annotation_terms (term);
CREATE TABLE IF NOT EXISTS properties (
    id INTEGER PRIMARY KEY, domain_class TEXT NOT NULL, domain_ident INTEGER NOT NULL, key TEXT NOT NULL,
    value TEXT, created INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS properties_domain ON properties (domain_ident);
CREATE TABLE IF NOT EXISTS attached_files (
    id INTEGER PRIMARY KEY, domain_class TEXT NOT NULL, domain_ident INTEGER NOT NULL, filename TEXT NOT NULL,
    size INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS attached_files_domain ON attached_files (domain_ident);
"""

# Which table holds the objects of each domain class that properties and files may be attached to.
DOMAIN_TABLES = {PROJECT_CLASS: "projects", IMAGE_CLASS: "images", JOB_CLASS: "jobs",
                 SOFTWARE_CLASS: "software", USER_ANNOTATION_CLASS: "annotations",
                 ALGO_ANNOTATION_CLASS: "annotations"}
ANNOTATION_ALIAS = "annotation"  # the client's short domain name for either annotation class

_ANNOTATION_COLUMNS = ("a.id, a.image, i.slice, a.project, a.user, a.algo, a.location, "
                       "(SELECT group_concat(term) FROM annotation_terms t WHERE t.annotation = a.id), "
                       "a.area, a.perimeter, a.centroid_x, a.centroid_y, a.created")


def now_ms() -> int:
    """Cytomine timestamps: milliseconds since the epoch."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class AnnotationQuery:
    """Filters of an annotation listing; empty tuples mean 'any'."""
    project: int | None = None
    images: tuple[int, ...] = ()
    users: tuple[int, ...] = ()
    terms: tuple[int, ...] = ()
    annotations: tuple[int, ...] = ()
    include_algo: bool = False
    max: int = 0
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    """A software parameter to register (see cyseg.server.descriptor)."""
    name: str
    type: str
    default_value: str | None
    required: bool
    set_by_server: bool
    index: int
    human_name: str
    value_key: str | None
    command_line_flag: str | None


class Store:
    """All reads and writes of the server's state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        db = self._connection()
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- connections and transactions -------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its first statement."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several queries see the same state."""
        db = self._connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    @staticmethod
    def _new_ids(db: sqlite3.Connection, count: int) -> range:
        (last,) = db.execute("UPDATE sequence SET value = value + ? WHERE id = 1 RETURNING value",
                             (count,)).fetchone()
        return range(last - count + 1, last + 1)

    def _one(self, sql: str, args: Sequence[Any], kind: str, ident: object) -> tuple:
        row = self._connection().execute(sql, args).fetchone()
        if row is None:
            raise NotFound.of(kind, ident)
        return row

    # --- users ---------------------------------------------------------------------------------
    def create_user(self, username: str) -> User:
        with self._transaction() as db:
            return self._insert_user(db, username, None)

    def _insert_user(self, db: sqlite3.Connection, username: str, job: int | None) -> User:
        (user_id,) = self._new_ids(db, 1)
        public, private = new_key_pair()
        user = User(user_id, username, public, private, job, now_ms())
        db.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)",
                   (user.id, user.username, user.public_key, user.private_key, user.job, user.created))
        return user

    def user(self, user_id: int) -> User:
        return User(*self._one("SELECT * FROM users WHERE id = ?", (user_id,), "user", user_id))

    def user_by_public_key(self, public_key: str) -> User | None:
        row = self._connection().execute("SELECT * FROM users WHERE public_key = ?", (public_key,)).fetchone()
        return User(*row) if row else None

    def user_by_name(self, username: str) -> User | None:
        row = self._connection().execute(
            "SELECT * FROM users WHERE username = ? AND job IS NULL ORDER BY id LIMIT 1", (username,)).fetchone()
        return User(*row) if row else None

    # --- ontologies and terms ------------------------------------------------------------------
    def ensure_ontology(self, name: str, terms: Sequence[tuple[str, str]]) -> Ontology:
        """The ontology called `name`, created with `terms` (name, colour) when new."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM ontologies WHERE name = ?", (name,)).fetchone()
            if row:
                return Ontology(*row)
            ontology = Ontology(self._new_ids(db, 1)[0], name, now_ms())
            db.execute("INSERT INTO ontologies VALUES (?, ?, ?)", (ontology.id, ontology.name, ontology.created))
            for term_name, color in terms:
                self._insert_term(db, ontology.id, term_name, color, None)
            return ontology

    def ontology(self, ontology_id: int) -> Ontology:
        return Ontology(*self._one("SELECT * FROM ontologies WHERE id = ?", (ontology_id,), "ontology",
                                   ontology_id))

    def ontologies(self) -> list[Ontology]:
        return [Ontology(*row) for row in self._connection().execute("SELECT * FROM ontologies ORDER BY id")]

    def create_term(self, ontology: int, name: str, color: str, parent: int | None) -> Term:
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM terms WHERE ontology = ? AND name = ?", (ontology, name)).fetchone():
                raise BadRequest(f"term '{name}' already exists in ontology {ontology}")
            return self._insert_term(db, ontology, name, color, parent)

    def _insert_term(self, db: sqlite3.Connection, ontology: int, name: str, color: str,
                     parent: int | None) -> Term:
        term = Term(self._new_ids(db, 1)[0], ontology, name, color, parent, now_ms())
        db.execute("INSERT INTO terms VALUES (?, ?, ?, ?, ?, ?)",
                   (term.id, term.ontology, term.name, term.color, term.parent, term.created))
        return term

    def term(self, term_id: int) -> Term:
        return Term(*self._one("SELECT * FROM terms WHERE id = ?", (term_id,), "term", term_id))

    def terms(self, ontology: int | None = None) -> list[Term]:
        sql, args = "SELECT * FROM terms", ()
        if ontology is not None:
            sql, args = sql + " WHERE ontology = ?", (ontology,)
        return [Term(*row) for row in self._connection().execute(sql + " ORDER BY id", args)]

    # --- projects and images -------------------------------------------------------------------
    def ensure_project(self, name: str, ontology: int) -> Project:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM projects WHERE name = ?", (name,)).fetchone()
            if row:
                return Project(*row)
            project = Project(self._new_ids(db, 1)[0], name, ontology, now_ms())
            db.execute("INSERT INTO projects VALUES (?, ?, ?, ?)",
                       (project.id, project.name, project.ontology, project.created))
            return project

    def project(self, project_id: int) -> Project:
        return Project(*self._one("SELECT * FROM projects WHERE id = ?", (project_id,), "project", project_id))

    def projects(self) -> list[Project]:
        return [Project(*row) for row in self._connection().execute("SELECT * FROM projects ORDER BY id")]

    def ensure_image(self, project: int, path: str, filename: str, width: int, height: int,
                     resolution: float | None, magnification: int | None) -> Image:
        """The image of `path` in `project`, registered when new."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM images WHERE project = ? AND path = ?", (project, path)).fetchone()
            if row:
                return Image(*row)
            image_id, base_image, slice_id = self._new_ids(db, 3)
            image = Image(image_id, project, base_image, slice_id, path, filename, f"{base_image}/{filename}",
                          width, height, resolution, magnification, now_ms())
            db.execute("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (image.id, image.project, image.base_image, image.slice, image.path, image.filename,
                        image.ims_path, image.width, image.height, image.resolution, image.magnification,
                        image.created))
            return image

    def image(self, image_id: int) -> Image:
        return Image(*self._one("SELECT * FROM images WHERE id = ?", (image_id,), "image instance", image_id))

    def image_by_slice(self, slice_id: int) -> Image:
        return Image(*self._one("SELECT * FROM images WHERE slice = ?", (slice_id,), "slice instance", slice_id))

    def image_by_ims_path(self, ims_path: str) -> Image:
        return Image(*self._one("SELECT * FROM images WHERE ims_path = ?", (ims_path,), "image", repr(ims_path)))

    def images(self, project: int) -> list[Image]:
        return [Image(*row) for row in
                self._connection().execute("SELECT * FROM images WHERE project = ? ORDER BY id", (project,))]

    def annotation_counts(self, column: str, ident: int) -> tuple[int, int]:
        """(human, algo) annotation counts of one project or image (`column` is 'project' or 'image')."""
        if column not in ("project", "image"):
            raise ValueError(column)
        row = self._connection().execute(
            f"SELECT COALESCE(SUM(1 - algo), 0), COALESCE(SUM(algo), 0) FROM annotations WHERE {column} = ?",
            (ident,)).fetchone()
        return int(row[0]), int(row[1])

    # --- software and jobs -----------------------------------------------------------------------
    def ensure_software(self, name: str, version: str | None, digest: str,
                        parameters: Sequence[ParameterSpec]) -> Software:
        """The software registered from the descriptor with this digest, created when new."""
        with self._transaction() as db:
            row = db.execute("SELECT id, name, version, created FROM software WHERE digest = ?", (digest,)).fetchone()
            if row:
                return Software(*row)
            ids = self._new_ids(db, 1 + len(parameters))
            software = Software(ids[0], name, version, now_ms())
            db.execute("INSERT INTO software VALUES (?, ?, ?, ?, ?)",
                       (software.id, name, version, digest, software.created))
            db.executemany("INSERT INTO software_parameters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                (pid, software.id, p.name, p.type, p.default_value, p.required, p.set_by_server, p.index,
                 p.human_name, p.value_key, p.command_line_flag) for pid, p in zip(ids[1:], parameters)])
            return software

    def software(self, software_id: int) -> Software:
        return Software(*self._one("SELECT id, name, version, created FROM software WHERE id = ?",
                                   (software_id,), "software", software_id))

    def softwares(self) -> list[Software]:
        return [Software(*row) for row in
                self._connection().execute("SELECT id, name, version, created FROM software ORDER BY id")]

    def software_parameters(self, software: int, with_set_by_server: bool = True) -> list[SoftwareParameter]:
        sql = "SELECT * FROM software_parameters WHERE software = ?"
        if not with_set_by_server:
            sql += " AND set_by_server = 0"
        return [self._software_parameter(row) for row in self._connection().execute(sql + " ORDER BY idx, id",
                                                                                    (software,))]

    def software_parameter(self, parameter_id: int) -> SoftwareParameter:
        return self._software_parameter(self._one("SELECT * FROM software_parameters WHERE id = ?",
                                                  (parameter_id,), "software parameter", parameter_id))

    @staticmethod
    def _software_parameter(row: tuple) -> SoftwareParameter:
        parameter_id, software, name, kind, default, required, set_by_server, *rest = row
        return SoftwareParameter(parameter_id, software, name, kind, default, bool(required), bool(set_by_server),
                                 *rest)

    def create_job(self, project: int, software: int, creator: int) -> tuple[Job, User]:
        """A new job (status NOT LAUNCHED) and the user it runs as, with its own keys."""
        self.project(project)
        self.software(software)
        with self._transaction() as db:
            (job_id,) = self._new_ids(db, 1)
            user = self._insert_user(db, f"job{job_id}", job_id)
            (number,) = db.execute("SELECT COUNT(*) + 1 FROM jobs WHERE software = ? AND project = ?",
                                   (software, project)).fetchone()
            job = Job(job_id, project, software, number, user.id, creator, 0, None, 0, now_ms(), None)
            db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (job.id, job.project, job.software, job.number, job.user_job, job.creator, job.status,
                        job.status_comment, job.progress, job.created, job.updated))
            return job, user

    def job(self, job_id: int) -> Job:
        return Job(*self._one("SELECT * FROM jobs WHERE id = ?", (job_id,), "job", job_id))

    def jobs(self, project: int | None = None, software: int | None = None) -> list[Job]:
        clauses, args = [], []
        for column, value in (("project", project), ("software", software)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return [Job(*row) for row in self._connection().execute(f"SELECT * FROM jobs{where} ORDER BY id", args)]

    def update_job(self, job_id: int, status: int, status_comment: str | None, progress: int) -> Job:
        with self._transaction() as db:
            cursor = db.execute("UPDATE jobs SET status = ?, status_comment = ?, progress = ?, updated = ? "
                                "WHERE id = ?", (status, status_comment, progress, now_ms(), job_id))
            if cursor.rowcount == 0:
                raise NotFound.of("job", job_id)
        return self.job(job_id)

    def add_job_parameters(self, items: Sequence[tuple[int, int, str | None]]) -> list[JobParameter]:
        """Store (job, software parameter, value) triples; all or none."""
        created = now_ms()
        with self._transaction() as db:
            ids = self._new_ids(db, len(items))
            rows = [JobParameter(pid, job, parameter, value, created)
                    for pid, (job, parameter, value) in zip(ids, items)]
            db.executemany("INSERT INTO job_parameters VALUES (?, ?, ?, ?, ?)",
                           [(p.id, p.job, p.software_parameter, p.value, p.created) for p in rows])
            return rows

    def job_parameters(self, job: int) -> list[JobParameter]:
        return [JobParameter(*row) for row in self._connection().execute(
            "SELECT * FROM job_parameters WHERE job = ? ORDER BY id", (job,))]

    def job_parameter(self, parameter_id: int) -> JobParameter:
        return JobParameter(*self._one("SELECT * FROM job_parameters WHERE id = ?", (parameter_id,),
                                       "job parameter", parameter_id))

    # --- annotations -----------------------------------------------------------------------------
    def add_annotations(self, items: Sequence[NewAnnotation], algo: bool) -> list[Annotation]:
        """Store validated annotations in one transaction and return them with their ids."""
        created = now_ms()
        with self._transaction() as db:
            ids = self._new_ids(db, len(items))
            stored = [Annotation(aid, a.image.id, a.image.slice, a.image.project, a.user, algo, a.location,
                                 a.terms, a.area, a.perimeter, a.centroid_x, a.centroid_y, created)
                      for aid, a in zip(ids, items)]
            db.executemany("INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                (a.id, a.image, a.project, a.user, a.algo, a.location, a.area, a.perimeter, a.centroid_x,
                 a.centroid_y, a.created) for a in stored])
            db.executemany("INSERT OR IGNORE INTO annotation_terms VALUES (?, ?)",
                           [(a.id, term) for a in stored for term in a.terms])
            return stored

    @staticmethod
    def _annotation(row: tuple) -> Annotation:
        terms = tuple(int(t) for t in row[7].split(",")) if row[7] else ()
        return Annotation(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], terms, *row[8:])

    def annotation(self, annotation_id: int) -> Annotation:
        return self._annotation(self._one(
            f"SELECT {_ANNOTATION_COLUMNS} FROM annotations a JOIN images i ON i.id = a.image WHERE a.id = ?",
            (annotation_id,), "annotation", annotation_id))

    def annotations(self, query: AnnotationQuery) -> tuple[list[Annotation], int]:
        """One page of the annotations matching `query` (by id) and the total number that match."""
        clauses: list[str] = []
        args: list[Any] = []
        if query.project is not None:
            clauses.append("a.project = ?")
            args.append(query.project)
        for column, values in (("a.image", query.images), ("a.user", query.users), ("a.id", query.annotations)):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if query.terms:
            clauses.append("a.id IN (SELECT annotation FROM annotation_terms WHERE term IN "
                           f"({','.join('?' * len(query.terms))}))")
            args.extend(query.terms)
        if not query.include_algo and not query.users and not query.annotations:
            clauses.append("a.algo = 0")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        page = f" LIMIT {int(query.max)} OFFSET {int(query.offset)}" if query.max else (
            f" LIMIT -1 OFFSET {int(query.offset)}")
        with self._snapshot() as db:
            (total,) = db.execute(f"SELECT COUNT(*) FROM annotations a{where}", args).fetchone()
            rows = db.execute(f"SELECT {_ANNOTATION_COLUMNS} FROM annotations a JOIN images i ON i.id = a.image"
                              f"{where} ORDER BY a.id{page}", args).fetchall()
        return [self._annotation(row) for row in rows], total

    def delete_annotation(self, annotation_id: int) -> Annotation:
        annotation = self.annotation(annotation_id)
        with self._transaction() as db:
            db.execute("DELETE FROM annotations WHERE id = ?", (annotation_id,))
            db.execute("DELETE FROM properties WHERE domain_ident = ?", (annotation_id,))
        return annotation

    # --- properties and attached files ------------------------------------------------------------
    def domain_class(self, class_name: str, ident: int) -> str:
        """The canonical class of the object `ident` addressed as `class_name`; 404 when absent."""
        return self.domain_classes([(class_name, ident)])[0]

    def domain_classes(self, objects: Sequence[tuple[str, int]]) -> list[str]:
        """`domain_class` of each (class name, id), looked up with one query per table."""
        tables = [self._domain_table(class_name) for class_name, _ in objects]
        found: dict[tuple[str, int], int | None] = {}  # (table, id) -> algo (annotations) or None
        db = self._connection()
        for table in set(tables):
            idents = json.dumps([ident for (_, ident), t in zip(objects, tables) if t == table])
            column = "algo" if table == "annotations" else "NULL"
            rows = db.execute(f"SELECT id, {column} FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
                              (idents,))
            found.update(((table, ident), algo) for ident, algo in rows)
        classes = []
        for (class_name, ident), table in zip(objects, tables):
            if (table, ident) not in found:
                raise NotFound.of("annotation" if table == "annotations" else class_name, ident)
            algo = found[table, ident]
            classes.append(class_name if algo is None else ALGO_ANNOTATION_CLASS if algo else USER_ANNOTATION_CLASS)
        return classes

    @staticmethod
    def _domain_table(class_name: str) -> str:
        table = "annotations" if class_name == ANNOTATION_ALIAS else DOMAIN_TABLES.get(class_name)
        if table is None:
            raise BadRequest(f"unsupported domain class '{class_name}' (one of {', '.join(sorted(DOMAIN_TABLES))})")
        return table

    def add_properties(self, items: Sequence[tuple[str, int, str, str | None]]) -> list[Property]:
        """Store (domain class, domain id, key, value) properties, of one object or many, all or none."""
        created = now_ms()
        with self._transaction() as db:
            ids = self._new_ids(db, len(items))
            rows = [Property(pid, domain_class, ident, key, value, created)
                    for pid, (domain_class, ident, key, value) in zip(ids, items)]
            db.executemany("INSERT INTO properties VALUES (?, ?, ?, ?, ?, ?)",
                           [(p.id, p.domain_class, p.domain_ident, p.key, p.value, p.created) for p in rows])
            return rows

    def properties(self, ident: int, key: str | None = None) -> list[Property]:
        sql, args = "SELECT * FROM properties WHERE domain_ident = ?", (ident,)
        if key is not None:
            sql, args = sql + " AND key = ?", (ident, key)
        return [Property(*row) for row in self._connection().execute(sql + " ORDER BY id", args)]

    def annotation_positions(self, user: int, image: int, key: str) -> list[tuple[int, float, float, str | None]]:
        """(annotation id, centroid x, centroid y, value) of the user's annotations in the image that have the
        property `key`."""
        return self._connection().execute(
            "SELECT a.id, a.centroid_x, a.centroid_y, p.value FROM annotations a JOIN properties p "
            "ON p.domain_ident = a.id AND p.key = ? WHERE a.image = ? AND a.user = ? ORDER BY a.id, p.id",
            (key, image, user)).fetchall()

    def property(self, ident: int, property_id: int) -> Property:
        return Property(*self._one("SELECT * FROM properties WHERE id = ? AND domain_ident = ?",
                                   (property_id, ident), "property", property_id))

    def update_property(self, ident: int, property_id: int, key: str, value: str | None) -> Property:
        self.property(ident, property_id)
        with self._transaction() as db:
            db.execute("UPDATE properties SET key = ?, value = ? WHERE id = ?", (key, value, property_id))
        return self.property(ident, property_id)

    def delete_property(self, ident: int, property_id: int) -> Property:
        prop = self.property(ident, property_id)
        with self._transaction() as db:
            db.execute("DELETE FROM properties WHERE id = ?", (property_id,))
        return prop

    def add_attached_file(self, domain_class: str, ident: int, filename: str, size: int,
                          place: Callable[[int], None]) -> AttachedFile:
        """Record an attached file; `place(id)` moves its content to where id names it, inside the transaction."""
        with self._transaction() as db:
            record = AttachedFile(self._new_ids(db, 1)[0], domain_class, ident, filename, size, now_ms())
            db.execute("INSERT INTO attached_files VALUES (?, ?, ?, ?, ?, ?)",
                       (record.id, record.domain_class, record.domain_ident, record.filename, record.size,
                        record.created))
            place(record.id)
            return record

    def attached_file(self, file_id: int) -> AttachedFile:
        return AttachedFile(*self._one("SELECT * FROM attached_files WHERE id = ?", (file_id,), "attached file",
                                       file_id))

    def attached_files(self, ident: int | None = None) -> list[AttachedFile]:
        sql, args = "SELECT * FROM attached_files", ()
        if ident is not None:
            sql, args = sql + " WHERE domain_ident = ?", (ident,)
        return [AttachedFile(*row) for row in self._connection().execute(sql + " ORDER BY id", args)]

    def delete_attached_file(self, file_id: int) -> AttachedFile:
        record = self.attached_file(file_id)
        with self._transaction() as db:
            db.execute("DELETE FROM attached_files WHERE id = ?", (file_id,))
        return record

