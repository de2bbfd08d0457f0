"""Subject -> category maps: MMLU's four groups (Hendrycks et al., categories.py) and C-Eval's
four categories with each subject's Chinese name (C-Eval's subject_mapping.json).

A subject that is in neither map (a data set of your own) falls under "other".
"""

from __future__ import annotations

STEM, HUMANITIES, SOCIAL, OTHER = "STEM", "humanities", "social sciences", "other"

MMLU_CATEGORY: dict[str, str] = {
    "abstract_algebra": STEM,
    "anatomy": OTHER,
    "astronomy": STEM,
    "business_ethics": OTHER,
    "clinical_knowledge": OTHER,
    "college_biology": STEM,
    "college_chemistry": STEM,
    "college_computer_science": STEM,
    "college_mathematics": STEM,
    "college_medicine": OTHER,
    "college_physics": STEM,
    "computer_security": STEM,
    "conceptual_physics": STEM,
    "econometrics": SOCIAL,
    "electrical_engineering": STEM,
    "elementary_mathematics": STEM,
    "formal_logic": HUMANITIES,
    "global_facts": OTHER,
    "high_school_biology": STEM,
    "high_school_chemistry": STEM,
    "high_school_computer_science": STEM,
    "high_school_european_history": HUMANITIES,
    "high_school_geography": SOCIAL,
    "high_school_government_and_politics": SOCIAL,
    "high_school_macroeconomics": SOCIAL,
    "high_school_mathematics": STEM,
    "high_school_microeconomics": SOCIAL,
    "high_school_physics": STEM,
    "high_school_psychology": SOCIAL,
    "high_school_statistics": STEM,
    "high_school_us_history": HUMANITIES,
    "high_school_world_history": HUMANITIES,
    "human_aging": OTHER,
    "human_sexuality": SOCIAL,
    "international_law": HUMANITIES,
    "jurisprudence": HUMANITIES,
    "logical_fallacies": HUMANITIES,
    "machine_learning": STEM,
    "management": OTHER,
    "marketing": OTHER,
    "medical_genetics": OTHER,
    "miscellaneous": OTHER,
    "moral_disputes": HUMANITIES,
    "moral_scenarios": HUMANITIES,
    "nutrition": OTHER,
    "philosophy": HUMANITIES,
    "prehistory": HUMANITIES,
    "professional_accounting": OTHER,
    "professional_law": HUMANITIES,
    "professional_medicine": OTHER,
    "professional_psychology": SOCIAL,
    "public_relations": SOCIAL,
    "security_studies": SOCIAL,
    "sociology": SOCIAL,
    "us_foreign_policy": SOCIAL,
    "virology": OTHER,
    "world_religions": HUMANITIES,
}

CEVAL_STEM, CEVAL_SOCIAL, CEVAL_HUMANITIES, CEVAL_OTHER = "STEM", "Social Science", "Humanities", "Other"

# subject -> (Chinese name used in the prompt, category)
CEVAL_SUBJECT: dict[str, tuple[str, str]] = {
    "computer_network": ("计算机网络", CEVAL_STEM),
    "operating_system": ("操作系统", CEVAL_STEM),
    "computer_architecture": ("计算机组成", CEVAL_STEM),
    "college_programming": ("大学编程", CEVAL_STEM),
    "college_physics": ("大学物理", CEVAL_STEM),
    "college_chemistry": ("大学化学", CEVAL_STEM),
    "advanced_mathematics": ("高等数学", CEVAL_STEM),
    "probability_and_statistics": ("概率统计", CEVAL_STEM),
    "discrete_mathematics": ("离散数学", CEVAL_STEM),
    "electrical_engineer": ("注册电气工程师", CEVAL_STEM),
    "metrology_engineer": ("注册计量师", CEVAL_STEM),
    "high_school_mathematics": ("高中数学", CEVAL_STEM),
    "high_school_physics": ("高中物理", CEVAL_STEM),
    "high_school_chemistry": ("高中化学", CEVAL_STEM),
    "high_school_biology": ("高中生物", CEVAL_STEM),
    "middle_school_mathematics": ("初中数学", CEVAL_STEM),
    "middle_school_biology": ("初中生物", CEVAL_STEM),
    "middle_school_physics": ("初中物理", CEVAL_STEM),
    "middle_school_chemistry": ("初中化学", CEVAL_STEM),
    "veterinary_medicine": ("兽医学", CEVAL_STEM),
    "college_economics": ("大学经济学", CEVAL_SOCIAL),
    "business_administration": ("工商管理", CEVAL_SOCIAL),
    "marxism": ("马克思主义基本原理", CEVAL_SOCIAL),
    "mao_zedong_thought": ("毛泽东思想和中国特色社会主义理论体系概论", CEVAL_SOCIAL),
    "education_science": ("教育学", CEVAL_SOCIAL),
    "teacher_qualification": ("教师资格", CEVAL_SOCIAL),
    "high_school_politics": ("高中政治", CEVAL_SOCIAL),
    "high_school_geography": ("高中地理", CEVAL_SOCIAL),
    "middle_school_politics": ("初中政治", CEVAL_SOCIAL),
    "middle_school_geography": ("初中地理", CEVAL_SOCIAL),
    "modern_chinese_history": ("近代史纲要", CEVAL_HUMANITIES),
    "ideological_and_moral_cultivation": ("思想道德修养与法律基础", CEVAL_HUMANITIES),
    "logic": ("逻辑学", CEVAL_HUMANITIES),
    "law": ("法学", CEVAL_HUMANITIES),
    "chinese_language_and_literature": ("中国语言文学", CEVAL_HUMANITIES),
    "art_studies": ("艺术学", CEVAL_HUMANITIES),
    "professional_tour_guide": ("导游资格", CEVAL_HUMANITIES),
    "legal_professional": ("法律职业资格", CEVAL_HUMANITIES),
    "high_school_chinese": ("高中语文", CEVAL_HUMANITIES),
    "high_school_history": ("高中历史", CEVAL_HUMANITIES),
    "middle_school_history": ("初中历史", CEVAL_HUMANITIES),
    "civil_servant": ("公务员", CEVAL_OTHER),
    "sports_science": ("体育学", CEVAL_OTHER),
    "plant_protection": ("植物保护", CEVAL_OTHER),
    "basic_medicine": ("基础医学", CEVAL_OTHER),
    "clinical_medicine": ("临床医学", CEVAL_OTHER),
    "urban_and_rural_planner": ("注册城乡规划师", CEVAL_OTHER),
    "accountant": ("注册会计师", CEVAL_OTHER),
    "fire_engineer": ("注册消防工程师", CEVAL_OTHER),
    "environmental_impact_assessment_engineer": ("环境影响评价工程师", CEVAL_OTHER),
    "tax_accountant": ("税务师", CEVAL_OTHER),
    "physician": ("医师资格", CEVAL_OTHER),
}


def mmlu_category(subject: str) -> str:
    return MMLU_CATEGORY.get(subject, OTHER)


def ceval_category(subject: str) -> str:
    return CEVAL_SUBJECT.get(subject, ("", CEVAL_OTHER))[1]


def ceval_name(subject: str) -> str:
    """The Chinese subject name C-Eval's prompt uses; an unknown subject keeps its own name."""
    return CEVAL_SUBJECT.get(subject, (subject.replace("_", " "), ""))[0]
