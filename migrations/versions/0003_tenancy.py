"""tenancy: operator registration fields, joint use, in-business IDs, operator certificates, staging list

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

_GENDER = sa.Enum("unspecified", "male", "female", name="gender", native_enum=False, length=40)


def upgrade() -> None:
    with op.batch_alter_table("operator", schema=None) as batch_op:
        batch_op.add_column(sa.Column("department", sa.String(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("gender", _GENDER, nullable=False, server_default="unspecified"))
        batch_op.add_column(sa.Column("phone", sa.String(length=40), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("extension", sa.String(length=20), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("email", sa.String(length=320), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("info", sa.String(length=1000), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("extra_info", sa.String(length=1000), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("administers_business_system_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("updated_at", db.UtcDateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_operator_administers_business_system_id_business_system"),
            "business_system", ["administers_business_system_id"], ["id"])
    # The server defaults only filled existing rows; the models supply the values from now on.
    with op.batch_alter_table("operator", schema=None) as batch_op:
        for name in ("department", "gender", "phone", "extension", "email", "info", "extra_info"):
            batch_op.alter_column(name, server_default=None)

    op.create_table(
        "operator_business_system",
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("business_system_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["business_system_id"], ["business_system.id"],
                                name=op.f("fk_operator_business_system_business_system_id_business_system")),
        sa.ForeignKeyConstraint(["operator_id"], ["operator.id"], ondelete="CASCADE",
                                name=op.f("fk_operator_business_system_operator_id_operator")),
        sa.PrimaryKeyConstraint("operator_id", "business_system_id", name=op.f("pk_operator_business_system")),
    )
    op.create_index(op.f("ix_operator_business_system_business_system_id"), "operator_business_system",
                    ["business_system_id"], unique=False)

    op.create_table(
        "joint_use",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("business_system_id", sa.Integer(), nullable=False),
        sa.Column("created_at", db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["business_system_id"], ["business_system.id"],
                                name=op.f("fk_joint_use_business_system_id_business_system")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_joint_use_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("tenant_id", "business_system_id", name=op.f("pk_joint_use")),
    )
    op.create_index(op.f("ix_joint_use_business_system_id"), "joint_use", ["business_system_id"], unique=False)

    op.create_table(
        "in_business_id",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("business_system_id", sa.Integer(), nullable=False),
        sa.Column("in_business_id", sa.String(length=64), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("updated_at", db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["business_system_id"], ["business_system.id"],
                                name=op.f("fk_in_business_id_business_system_id_business_system")),
        sa.ForeignKeyConstraint(["operator_id"], ["operator.id"], ondelete="CASCADE",
                                name=op.f("fk_in_business_id_operator_id_operator")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_in_business_id")),
        sa.UniqueConstraint("operator_id", "business_system_id", name=op.f("uq_in_business_id_operator_id")),
    )
    op.create_index(op.f("ix_in_business_id_business_system_id"), "in_business_id", ["business_system_id"],
                    unique=False)
    op.create_index(op.f("ix_in_business_id_operator_id"), "in_business_id", ["operator_id"], unique=False)

    op.create_table(
        "operator_certificate",
        sa.Column("certificate_id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["certificate_id"], ["certificate.id"],
                                name=op.f("fk_operator_certificate_certificate_id_certificate")),
        sa.ForeignKeyConstraint(["operator_id"], ["operator.id"],
                                name=op.f("fk_operator_certificate_operator_id_operator")),
        sa.PrimaryKeyConstraint("certificate_id", name=op.f("pk_operator_certificate")),
    )
    op.create_index(op.f("ix_operator_certificate_operator_id"), "operator_certificate", ["operator_id"],
                    unique=False)

    op.create_table(
        "staged_operator",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("manager_id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("password_hash", sa.String(length=400), nullable=False),
        sa.Column("created_at", db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["manager_id"], ["operator.id"], ondelete="CASCADE",
                                name=op.f("fk_staged_operator_manager_id_operator")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_staged_operator_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staged_operator")),
        sa.UniqueConstraint("manager_id", "tenant_id", "operator_id", name=op.f("uq_staged_operator_manager_id")),
    )
    op.create_index(op.f("ix_staged_operator_manager_id"), "staged_operator", ["manager_id"], unique=False)
    op.create_index(op.f("ix_staged_operator_tenant_id"), "staged_operator", ["tenant_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_staged_operator_tenant_id"), table_name="staged_operator")
    op.drop_index(op.f("ix_staged_operator_manager_id"), table_name="staged_operator")
    op.drop_table("staged_operator")
    op.drop_index(op.f("ix_operator_certificate_operator_id"), table_name="operator_certificate")
    op.drop_table("operator_certificate")
    op.drop_index(op.f("ix_in_business_id_operator_id"), table_name="in_business_id")
    op.drop_index(op.f("ix_in_business_id_business_system_id"), table_name="in_business_id")
    op.drop_table("in_business_id")
    op.drop_index(op.f("ix_joint_use_business_system_id"), table_name="joint_use")
    op.drop_table("joint_use")
    op.drop_index(op.f("ix_operator_business_system_business_system_id"), table_name="operator_business_system")
    op.drop_table("operator_business_system")
    with op.batch_alter_table("operator", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_operator_administers_business_system_id_business_system"),
                                 type_="foreignkey")
        for name in ("updated_at", "administers_business_system_id", "extra_info", "info", "email",
                     "extension", "phone", "gender", "department"):
            batch_op.drop_column(name)
